"""Where staff author the catalogue and read learners' progress.

Saves and deletes here drop the shared cache entries through labs.receivers; the
publish and withdraw list actions go through a service, since a bulk update sends no
save signal.
"""

from __future__ import annotations

import copy

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.forms.models import BaseInlineFormSet, construct_instance
from django.urls import reverse
from django.utils.html import format_html

from cyberlab.accounts.admin import UserAdmin
from cyberlab.accounts.models import User
from labs import selectors, services
from labs.models import (
    CheatingSignal,
    Choice,
    Course,
    Enrollment,
    Flag,
    IssuedFlag,
    Lab,
    MachineTemplate,
    Question,
    QuestionKind,
    Quiz,
    QuizAttempt,
    Solve,
    Submission,
)
from labs.validators import machine_template_problems


class PublishActions:
    """The published toggle as list actions on courses, labs and quizzes."""

    actions = ["publish", "unpublish"]

    @admin.action(description="Publish the selected items", permissions=["change"])
    def publish(self, request, queryset):
        changed = services.catalogue_set_published(queryset=queryset, published=True)
        self.message_user(request, f"{changed} published.", messages.SUCCESS)

    @admin.action(description="Withdraw (unpublish) the selected items", permissions=["change"])
    def unpublish(self, request, queryset):
        changed = services.catalogue_set_published(queryset=queryset, published=False)
        self.message_user(request, f"{changed} withdrawn.", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Progress and audit rows are written by learners' actions, never by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- content ---------------------------------------------------------------------------


class LabInline(admin.TabularInline):
    model = Lab
    fields = ("title", "difficulty", "order", "published")
    extra = 0
    show_change_link = True


class QuizInline(admin.TabularInline):
    model = Quiz
    fields = ("title", "order", "published", "pass_mark")
    extra = 0
    show_change_link = True


@admin.register(Course)
class CourseAdmin(PublishActions, admin.ModelAdmin):
    list_display = ("title", "slug", "difficulty", "published", "order", "lab_count", "updated_at")
    list_filter = ("published", "difficulty")
    list_editable = ("order",)
    search_fields = ("title", "slug", "summary")
    ordering = ("order", "id")
    prepopulated_fields = {"slug": ("title",)}
    inlines = [LabInline, QuizInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(lab_total=Count("labs", distinct=True))

    @admin.display(description="labs", ordering="lab_total")
    def lab_count(self, obj):
        return obj.lab_total


class FlagInline(admin.StackedInline):
    model = Flag
    fields = (("prompt", "points", "order"), ("kind", "value"), ("case_sensitive", "max_attempts"))
    extra = 0


class MachineTemplateForm(forms.ModelForm):
    """Shows what the platform would refuse to start (registered checks) when staff save."""

    class Meta:
        model = MachineTemplate
        fields = (
            "lab",
            "image",
            "ports",
            "memory_mb",
            "cpus",
            "lifetime_minutes",
            "environment",
            "capabilities",
            "ssh_user",
        )

    def clean(self):
        cleaned_data = super().clean()
        # The checks need the template as it would be saved; a copy, because the model
        # validation that follows builds the instance from the cleaned data itself.
        candidate = construct_instance(self, copy.copy(self.instance))
        try:
            candidate.clean()
        except ValidationError:
            # A malformed field is reported by the model's own validation; checking the
            # policy of a shape it does not understand would only repeat it less clearly.
            return cleaned_data
        problems = machine_template_problems(candidate)
        if problems:
            raise ValidationError(problems)
        return cleaned_data


class MachineTemplateInline(admin.StackedInline):
    model = MachineTemplate
    form = MachineTemplateForm
    extra = 0
    max_num = 1


@admin.register(Lab)
class LabAdmin(PublishActions, admin.ModelAdmin):
    list_display = ("title", "course", "difficulty", "published", "order", "flag_count", "has_machine")
    list_filter = ("published", "difficulty", "course")
    list_select_related = ("course", "machine")
    search_fields = ("title", "description", "course__title")
    ordering = ("course__order", "course", "order", "id")
    autocomplete_fields = ("course",)
    inlines = [FlagInline, MachineTemplateInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(flag_total=Count("flags", distinct=True))

    @admin.display(description="flags", ordering="flag_total")
    def flag_count(self, obj):
        return obj.flag_total

    @admin.display(description="machine", boolean=True)
    def has_machine(self, obj):
        return hasattr(obj, "machine")


@admin.register(MachineTemplate)
class MachineTemplateAdmin(admin.ModelAdmin):
    form = MachineTemplateForm
    list_display = ("lab", "image", "memory_mb", "cpus", "lifetime_minutes")
    list_filter = ("image",)
    list_select_related = ("lab",)
    search_fields = ("image", "lab__title")
    autocomplete_fields = ("lab",)


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    list_display = ("prompt", "lab", "kind", "points", "max_attempts", "order")
    list_filter = ("kind", "case_sensitive", "lab__course")
    list_select_related = ("lab",)
    search_fields = ("prompt", "lab__title")
    ordering = ("lab", "order", "id")
    autocomplete_fields = ("lab",)


class QuestionInline(admin.StackedInline):
    model = Question
    fields = (("text", "kind", "points", "order"), ("answer", "match"), "explanation")
    extra = 0
    show_change_link = True


@admin.register(Quiz)
class QuizAdmin(PublishActions, admin.ModelAdmin):
    list_display = ("title", "course", "published", "order", "pass_mark", "max_attempts", "question_count")
    list_filter = ("published", "shuffle", "course")
    list_select_related = ("course",)
    search_fields = ("title", "course__title")
    ordering = ("course", "order", "id")
    autocomplete_fields = ("course",)
    inlines = [QuestionInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(question_total=Count("questions", distinct=True))

    @admin.display(description="questions", ordering="question_total")
    def question_count(self, obj):
        return obj.question_total


class ChoiceFormSet(BaseInlineFormSet):
    """A single-choice question has exactly one correct choice, a multiple one at least one."""

    def clean(self):
        super().clean()
        kind = self.instance.kind
        if kind == QuestionKind.TEXT:
            return
        kept = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE", False)
        ]
        correct = sum(1 for data in kept if data.get("correct"))
        if kind == QuestionKind.SINGLE and correct != 1:
            raise ValidationError("A single-choice question needs exactly one correct choice.")
        if kind == QuestionKind.MULTIPLE and correct < 1:
            raise ValidationError("A multiple-choice question needs at least one correct choice.")


class ChoiceInline(admin.TabularInline):
    model = Choice
    formset = ChoiceFormSet
    fields = ("text", "correct", "order")
    extra = 0


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = ("text", "quiz", "kind", "points", "order")
    list_filter = ("kind", "quiz__course")
    list_select_related = ("quiz",)
    search_fields = ("text", "quiz__title")
    ordering = ("quiz", "order", "id")
    autocomplete_fields = ("quiz",)
    inlines = [ChoiceInline]


@admin.register(Choice)
class ChoiceAdmin(admin.ModelAdmin):
    list_display = ("text", "question", "correct", "order")
    list_filter = ("correct", "question__quiz")
    list_select_related = ("question",)
    search_fields = ("text", "question__text")
    autocomplete_fields = ("question",)


# --- progress and audit ---------------------------------------------------------------


@admin.register(Solve)
class SolveAdmin(ReadOnlyAdmin):
    list_display = ("user", "course", "source", "flag", "question", "points", "created_at")
    list_filter = ("course", "created_at")
    list_select_related = ("user", "course", "flag", "question")
    search_fields = ("user__username", "user__display_name")
    date_hierarchy = "created_at"


@admin.register(Submission)
class SubmissionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "user", "flag", "verdict", "ip")
    list_filter = ("verdict", "flag__lab__course", "created_at")
    list_select_related = ("user", "flag")
    search_fields = ("user__username", "ip", "flag__prompt")
    date_hierarchy = "created_at"


@admin.register(CheatingSignal)
class CheatingSignalAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "submitter", "owner", "flag")
    list_filter = ("flag__lab__course", "created_at")
    list_select_related = ("submitter", "owner", "flag")
    search_fields = ("submitter__username", "owner__username")
    date_hierarchy = "created_at"


@admin.register(IssuedFlag)
class IssuedFlagAdmin(ReadOnlyAdmin):
    list_display = ("issued_at", "user", "flag")
    list_filter = ("flag__lab__course",)
    list_select_related = ("user", "flag")
    search_fields = ("user__username", "digest")


@admin.register(QuizAttempt)
class QuizAttemptAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "user", "quiz", "score", "max_score", "passed")
    list_filter = ("passed", "quiz__course", "quiz")
    list_select_related = ("user", "quiz")
    search_fields = ("user__username",)
    date_hierarchy = "created_at"


@admin.register(Enrollment)
class EnrollmentAdmin(admin.ModelAdmin):
    list_display = ("user", "course", "created_at")
    list_filter = ("course",)
    list_select_related = ("user", "course")
    search_fields = ("user__username", "course__title")
    autocomplete_fields = ("user", "course")


# --- a learner's progress on the user page --------------------------------------------


class SolveInline(ReadOnlyInline):
    model = Solve
    fields = ("created_at", "course", "flag", "question", "points")
    readonly_fields = fields
    ordering = ("-created_at",)


class QuizAttemptInline(ReadOnlyInline):
    model = QuizAttempt
    fields = ("created_at", "quiz", "score", "max_score", "passed")
    readonly_fields = fields
    ordering = ("-created_at",)


class EnrollmentInline(ReadOnlyInline):
    model = Enrollment
    fields = ("course", "created_at")
    readonly_fields = fields


admin.site.unregister(User)


@admin.register(User)
class LearnerAdmin(UserAdmin):
    """The accounts user page, with the learner's points, solves, attempts and enrolments."""

    inlines = [*UserAdmin.inlines, EnrollmentInline, SolveInline, QuizAttemptInline]
    readonly_fields = (*UserAdmin.readonly_fields, "points", "audit_links")
    fieldsets = (*UserAdmin.fieldsets, ("Progress", {"fields": ("points", "audit_links")}))

    def get_inlines(self, request, obj):
        return super().get_inlines(request, obj) if obj is not None else []

    @admin.display(description="points")
    def points(self, obj):
        if obj.pk is None:
            return 0
        return selectors.user_points(user=obj)

    @admin.display(description="audit")
    def audit_links(self, obj):
        if obj.pk is None:
            return "-"
        submissions = reverse("admin:labs_submission_changelist") + f"?user__id__exact={obj.pk}"
        signals = reverse("admin:labs_cheatingsignal_changelist") + f"?submitter__id__exact={obj.pk}"
        return format_html(
            '<a href="{}">flag submissions</a> · <a href="{}">cheating signals</a>', submissions, signals
        )
