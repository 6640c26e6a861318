"""The job runner's part bookkeeping: the part that completes the set merges, once, under the lock."""

import threading

from emotionclip.jobs import Part, complete_set


def test_only_the_part_completing_the_set_merges(tmp_path):
    done: set[int] = set()
    merges: list[int] = []

    def finish(index: int):
        done.add(index)
        return complete_set(tmp_path, Part(index, 3), lambda p: p.index in done, lambda: merges.append(index))

    assert finish(2) is None and finish(0) is None and merges == []
    finish(1)
    assert merges == [1]


def test_parts_finishing_together_merge_once(tmp_path):
    done: set[int] = set()
    merges: list[int] = []
    barrier = threading.Barrier(4)

    def finish(index: int) -> None:
        done.add(index)
        barrier.wait()  # all four are done before any checks: only one may merge
        complete_set(
            tmp_path,
            Part(index, 4),
            lambda p: p.index in done and (tmp_path / "merged").exists() is False,
            lambda: (tmp_path / "merged").touch() or merges.append(index),
        )

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(merges) == 1 and (tmp_path / "merged").exists()
