"""Drops the shared catalogue entries a staff edit changes, once the edit commits.

Connected in LabsConfig.ready() to the save and delete signals of every model that
shows in a cache entry. The keys are worked out before and after the change, so moving
a lab to another course or renaming a course's slug drops the old entries too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from labs import cache
from labs.models import Choice, Course, Flag, Lab, MachineTemplate, Question, Quiz

CATALOGUE_MODELS = (Course, Lab, MachineTemplate, Flag, Quiz, Question, Choice)

# For each model: the field naming the cache entry the row shows in, how that field
# becomes the entry's key, and the field naming the row's course.
_ROW_KEYS: dict[type[Model], tuple[str, Callable[[Any], str], str]] = {
    Course: ("slug", lambda slug: cache.course_key(slug=slug), "id"),
    Lab: ("id", lambda pk: cache.lab_key(lab_id=pk), "course_id"),
    MachineTemplate: ("lab_id", lambda pk: cache.lab_key(lab_id=pk), "lab__course_id"),
    Flag: ("lab_id", lambda pk: cache.lab_key(lab_id=pk), "lab__course_id"),
    Quiz: ("id", lambda pk: cache.quiz_key(quiz_id=pk), "course_id"),
    Question: ("quiz_id", lambda pk: cache.quiz_key(quiz_id=pk), "quiz__course_id"),
    Choice: ("question__quiz_id", lambda pk: cache.quiz_key(quiz_id=pk), "question__quiz__course_id"),
}


def _keys_for_rows(model: type[Model], rows: Iterable[dict]) -> set[str]:
    entry_field, entry_key, course_field = _ROW_KEYS[model]
    keys = {cache.courses_list_key()}
    course_ids: set[int] = set()
    for row in rows:
        keys.add(entry_key(row[entry_field]))
        course_ids.add(row[course_field])
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
        entry_field, _, course_field = _ROW_KEYS[model]
        rows = model.objects.filter(pk__in=pks).values(entry_field, course_field)
        keys |= _keys_for_rows(model, rows)
    return keys


def catalogue_invalidate_on_commit(*, objects: Iterable[Model], extra_keys: Iterable[str] = ()) -> None:
    keys = catalogue_keys(objects=objects) | set(extra_keys)
    transaction.on_commit(lambda: cache.catalogue_invalidate(keys=keys))


def _remember_before(sender, instance, raw=False, **kwargs) -> None:
    if raw:
        return
    # Carried on the instance to its post_save or post_delete, which sees the same object.
    instance.catalogue_keys_before = catalogue_keys(objects=[instance]) if instance.pk else set()


def _drop_after_save(sender, instance, raw=False, **kwargs) -> None:
    if raw:
        return
    before = getattr(instance, "catalogue_keys_before", set())
    catalogue_invalidate_on_commit(objects=[instance], extra_keys=before)


def _drop_after_delete(sender, instance, **kwargs) -> None:
    # The row is gone after the delete, so the keys come from before it.
    before = getattr(instance, "catalogue_keys_before", set())
    transaction.on_commit(lambda: cache.catalogue_invalidate(keys=before))


def connect() -> None:
    for model in CATALOGUE_MODELS:
        uid = f"labs.catalogue.{model.__name__}"
        pre_save.connect(_remember_before, sender=model, dispatch_uid=f"{uid}.pre_save")
        post_save.connect(_drop_after_save, sender=model, dispatch_uid=f"{uid}.post_save")
        pre_delete.connect(_remember_before, sender=model, dispatch_uid=f"{uid}.pre_delete")
        post_delete.connect(_drop_after_delete, sender=model, dispatch_uid=f"{uid}.post_delete")
