"""How many lanes a run keeps (mailing/mail/pipeline.py, Lanes): the arithmetic, on any
database (the lanes themselves run on PostgreSQL: tests/mail/test_lanes.py)."""

from __future__ import annotations


def test_lanes_retire_while_the_relay_answers_faster_than_they_work_and_the_bound_holds() -> None:
    """pipeline.Lanes: with a round trip r a message and c of a lane's CPU a message, about
    1 + r / c lanes are kept (never fewer than MIN_LANES); a retired lane's share goes to the
    others' chunks, and lanes x chunk never exceeds the start's (the in-flight bound)."""
    from mailing.mail import pipeline

    lanes = pipeline.Lanes(24, 50)
    assert lanes.chunk() == 50
    # 20 ms or 5 ms away, 0.1 ms of CPU a copy: every lane is needed.
    assert not lanes.retire(0.020, 0.0001) and not lanes.retire(0.005, 0.0001)
    assert not lanes.retire(None, 0.0001) and not lanes.retire(0.001, 0.0)
    # 1 ms away: 11 lanes keep the CPU busy; the rest retire one by one.
    while lanes.retire(0.001, 0.0001):
        assert lanes.active * lanes.chunk() <= 24 * 50
    assert lanes.active == 11 and lanes.chunk() == 1200 // 11
    # A relay on loopback: down to MIN_LANES, each chunk at most MAX_CHUNK_FACTOR x the setting.
    while lanes.retire(0.00005, 0.0001):
        pass
    assert lanes.active == pipeline.MIN_LANES == 2
    assert lanes.chunk() == pipeline.MAX_CHUNK_FACTOR * 50 == 200
    assert lanes.active * lanes.chunk() <= 24 * 50
    # The next run starts with twice what the last kept: 8 lanes, the budget shared by them.
    again = pipeline.Lanes(24, 50, start=8)
    assert again.active == 8 and again.chunk() == 150
