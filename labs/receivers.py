"""Drops the shared catalogue entries a staff edit changes, once the edit commits.

Connected in LabsConfig.ready() to the save and delete signals of every model that
shows in a cache entry. The keys are worked out before and after the change, so moving
a lab to another course or renaming a course's slug drops the old entries too.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from labs import cache
from labs.models import Choice, Course, Flag, Lab, MachineTemplate, Question, Quiz

CATALOGUE_MODELS = (Course, Lab, MachineTemplate, Flag, Quiz, Question, Choice)

# What each model's row points at: (course ids, lab ids, quiz ids) are derived from these.
_PARENT_FIELDS = {
    Course: ("id", "slug"),
    Lab: ("id", "course_id"),
    MachineTemplate: ("lab_id", "lab__course_id"),
    Flag: ("lab_id", "lab__course_id"),
    Quiz: ("id", "course_id"),
    Question: ("quiz_id", "quiz__course_id"),
    Choice: ("question__quiz_id", "question__quiz__course_id"),
}


def _keys_for_rows(model: type[Model], rows: Iterable[dict]) -> set[str]:
    keys = {cache.courses_list_key()}
    course_ids: set[int] = set()
    for row in rows:
        if model is Course:
            keys.add(cache.course_key(slug=row["slug"]))
            course_ids.add(row["id"])
        elif model is Lab:
            keys.add(cache.lab_key(lab_id=row["id"]))
            course_ids.add(row["course_id"])
        elif model in (MachineTemplate, Flag):
            keys.add(cache.lab_key(lab_id=row["lab_id"]))
            course_ids.add(row["lab__course_id"])
        elif model is Quiz:
            keys.add(cache.quiz_key(quiz_id=row["id"]))
            course_ids.add(row["course_id"])
        elif model is Question:
            keys.add(cache.quiz_key(quiz_id=row["quiz_id"]))
            course_ids.add(row["quiz__course_id"])
        elif model is Choice:
            keys.add(cache.quiz_key(quiz_id=row["question__quiz_id"]))
            course_ids.add(row["question__quiz__course_id"])
    course_ids.discard(None)
    if model is Course:
        # A course's title and published state show in each of its labs and quizzes.
        keys |= {
            cache.lab_key(lab_id=pk)
            for pk in Lab.objects.filter(course_id__in=course_ids).values_list("id", flat=True)
        }
        keys |= {
            cache.quiz_key(quiz_id=pk)
            for pk in Quiz.objects.filter(course_id__in=course_ids).values_list("id", flat=True)
        }
    else:
        keys |= {
            cache.course_key(slug=slug)
            for slug in Course.objects.filter(pk__in=course_ids).values_list("slug", flat=True)
        }
    return keys


def catalogue_keys(*, objects: Iterable[Model]) -> set[str]:
    """Every cache key showing these rows, as they are stored in Postgres now."""
    by_model: dict[type[Model], list[int]] = {}
    for obj in objects:
        if obj.pk is not None:
            by_model.setdefault(type(obj), []).append(obj.pk)
    keys: set[str] = set()
    for model, pks in by_model.items():
        rows = model.objects.filter(pk__in=pks).values(*_PARENT_FIELDS[model])
        keys |= _keys_for_rows(model, rows)
    return keys


def catalogue_invalidate_on_commit(*, objects: Iterable[Model], extra_keys: Iterable[str] = ()) -> None:
    keys = catalogue_keys(objects=objects) | set(extra_keys)
    transaction.on_commit(lambda: cache.catalogue_invalidate(keys=keys))


def _remember_before(sender, instance, raw=False, **kwargs) -> None:
    if raw:
        return
    instance._catalogue_keys_before = catalogue_keys(objects=[instance]) if instance.pk else set()


def _drop_after_save(sender, instance, raw=False, **kwargs) -> None:
    if raw:
        return
    before = getattr(instance, "_catalogue_keys_before", set())
    catalogue_invalidate_on_commit(objects=[instance], extra_keys=before)


def _drop_after_delete(sender, instance, **kwargs) -> None:
    # The row is gone after the delete, so the keys come from before it.
    before = getattr(instance, "_catalogue_keys_before", set())
    transaction.on_commit(lambda: cache.catalogue_invalidate(keys=before))


def connect() -> None:
    for model in CATALOGUE_MODELS:
        uid = f"labs.catalogue.{model.__name__}"
        pre_save.connect(_remember_before, sender=model, dispatch_uid=f"{uid}.pre_save")
        post_save.connect(_drop_after_save, sender=model, dispatch_uid=f"{uid}.post_save")
        pre_delete.connect(_remember_before, sender=model, dispatch_uid=f"{uid}.pre_delete")
        post_delete.connect(_drop_after_delete, sender=model, dispatch_uid=f"{uid}.post_delete")
