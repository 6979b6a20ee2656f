"""Events `labs` sends; other apps subscribe, `labs` imports none of them.

points_awarded -- sent once per new Solve, after its transaction commits, with:
    solve_id: int      the Solve row
    user_id: int       the learner
    source: str        "flag" or "question"
    course_id: int     the course the flag or question belongs to
    points: int        points awarded by this solve
    awarded_at: datetime  when the solve was recorded (Solve.created_at)
"""

from django.dispatch import Signal

points_awarded = Signal()
