import numpy as np

from simfusion.models.recent import RecentPasses


def test_a_batch_seen_recently_is_not_computed_again_and_only_the_last_few_are_kept():
    recent = RecentPasses(keep=2)
    calls = []

    def compute(images):
        calls.append(images.sum())
        return {"maps": images.astype(np.float32) * 2}

    a, b, c = (np.full((2, 3), value, np.uint8) for value in (1, 2, 3))
    first = recent.get(a, "s", lambda: compute(a))
    again = recent.get(a.copy(), "s", lambda: compute(a))  # the same bytes: the same pass
    assert again is first and len(calls) == 1 and not first["maps"].flags.writeable
    recent.get(a, "other settings", lambda: compute(a))  # another setting is another pass
    assert len(calls) == 2 and len(recent) == 2
    recent.get(b, "s", lambda: compute(b))
    recent.get(c, "s", lambda: compute(c))
    assert len(recent) == 2
    recent.get(a, "s", lambda: compute(a))  # pushed out by the later batches
    assert len(calls) == 5
    recent.clear()
    assert len(recent) == 0
