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


def test_a_hit_keeps_a_batch_longer_than_one_not_asked_for_again():
    recent = RecentPasses(keep=2)
    computed = []

    def get(value):
        images = np.full((1, 2), value, np.uint8)
        return recent.get(images, None, lambda: computed.append(value) or {"maps": np.zeros(1)})

    get(1), get(2), get(1)  # 1 asked for again: 2 is now the oldest
    get(3)
    get(1)
    assert computed == [1, 2, 3]
    get(2)
    assert computed == [1, 2, 3, 2]
    # the same bytes as another dtype are another batch
    recent.get(np.full((1, 2), 1, np.int8), None, lambda: computed.append("int8") or {"maps": np.zeros(1)})
    assert computed[-1] == "int8"
