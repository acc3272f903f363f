"""A resolved alert rejects the approvals its run still waits for: the decision, pure."""

from __future__ import annotations

from opsdag.alerts.approvals import Asked, Cancel, cancellations, responder

ENDED = "2026-11-30T05:10:00+00:00"
OPTIONS = ("Approve", "Reject")


def asked(task_id="approve_terminate-idle", state="awaiting_input", answered=False, options=OPTIONS):
    return Asked(task_id, -1, state, options, answered)


def test_a_waiting_approval_is_rejected_in_the_name_of_alertmanager_saying_why():
    [cancel] = cancellations([asked()], ENDED)
    assert cancel == Cancel("approve_terminate-idle", -1, "Reject", responder(ENDED))
    assert cancel.responder == f"alertmanager (cancelled: the alert resolved at {ENDED})"


def test_a_task_parked_by_a_trigger_is_waiting_too():
    assert [c.task_id for c in cancellations([asked(state="deferred")], ENDED)] == ["approve_terminate-idle"]


def test_an_answered_approval_is_left_alone_so_a_repeat_answers_nothing_twice():
    assert cancellations([asked(answered=True)], ENDED) == []


def test_a_task_that_no_longer_waits_is_never_resumed():
    for state in ("success", "failed", "skipped", "running", "scheduled", None):
        assert cancellations([asked(state=state)], ENDED) == [], state


def test_a_request_without_a_reject_option_is_left_to_people():
    assert cancellations([asked(options=("Page on-call", "Wait"))], ENDED) == []


def test_no_request_no_answer_and_only_the_waiting_ones_of_several():
    assert cancellations([], ENDED) == []
    several = [
        asked("a", answered=True),
        asked("b"),
        asked("c", state="success"),
        asked("d", state="deferred"),
    ]
    assert [c.task_id for c in cancellations(several, ENDED)] == ["b", "d"]


def test_the_destructive_step_then_records_itself_skipped_saying_the_alert_resolved():
    from opsdag.runbooks.engine import approval_decision

    [cancel] = cancellations([asked()], ENDED)
    answer = {
        "chosen_options": [cancel.option],
        "responded_by_user": {"id": "alertmanager", "name": cancel.responder},
    }
    decision = approval_decision(dry_run=False, needs_approval=True, answer=answer)
    assert decision.mode == "skip" and decision.approved_by is None
    assert decision.reason == (
        f"rejected by alertmanager (cancelled: the alert resolved at {ENDED}) (Reject): nothing changed"
    )
