import asyncio
import threading

from aphrodite.continuous_learning.interaction import interaction_from_finished
from aphrodite.continuous_learning.store.writer import StoreWriter
from tests.continuous_learning.fakes import finished


def test_full_queue_drops_and_counts_without_blocking():
    gate = threading.Event()
    written: list[str] = []

    def write(batch):
        gate.wait(10)
        written.extend(i.id for i in batch)

    writer = StoreWriter(write, capacity=4)
    writer.start()
    items = [interaction_from_finished(finished()) for _ in range(50)]
    accepted = [writer.offer(i) for i in items]  # the writer is stuck: at most capacity (+1 in hand) fit
    assert writer.dropped == accepted.count(False) >= 45
    assert writer.queue_depth <= 4
    gate.set()
    writer.stop()
    assert written == [i.id for i, ok in zip(items, accepted) if ok]
    assert writer.queue_depth == 0


def test_jobs_run_after_what_was_queued_before():
    order: list[str] = []
    writer = StoreWriter(lambda batch: order.extend(i.id for i in batch), capacity=100)
    items = [interaction_from_finished(finished()) for _ in range(3)]
    for i in items:
        writer.offer(i)
    writer.start()

    async def main():
        return await writer.call(lambda: list(order))

    assert asyncio.run(main()) == [i.id for i in items]
    writer.stop()


def test_a_failing_batch_is_reported_and_the_writer_goes_on():
    errors: list[BaseException] = []
    calls = []

    def write(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError("disk full")

    writer = StoreWriter(write, capacity=10, on_error=lambda exc, lost: errors.append((exc, lost)))
    writer.start()
    writer.offer(interaction_from_finished(finished()))
    writer.submit(lambda: None).result(5)
    assert writer.dropped == 1  # the failed batch is lost, and counted as such
    writer.offer(interaction_from_finished(finished()))
    writer.submit(lambda: None).result(5)
    writer.stop()
    assert len(errors) == 1 and errors[0][1] == 1 and len(calls) == 2 and writer.alive is False
    assert writer.dropped == 1 and writer.queue_depth == 0 and writer.queued_bytes == 0
    assert writer.submit(lambda: 1).exception(1) is not None  # a stopped writer refuses, it does not hang


def test_the_queue_is_bounded_in_bytes_too():
    gate = threading.Event()
    writer = StoreWriter(lambda batch: gate.wait(10), capacity=1_000, max_bytes=50_000)
    writer.start()
    big = [interaction_from_finished(finished(text="x" * 20_000)) for _ in range(10)]
    accepted = [writer.offer(i) for i in big]
    assert accepted.count(True) <= 3 and writer.dropped == accepted.count(False) >= 7
    assert writer.queued_bytes <= 50_000
    gate.set()
    writer.stop()
    assert writer.queued_bytes == 0
