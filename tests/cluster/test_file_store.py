"""FileStore in one process: several stores on one file, threads, the life cycle
(stale files, deletion by the last user), a torn or foreign file. The test with real
processes is tests/multiprocess/test_store_processes.py."""

import struct
import threading
import time

import pytest

from axonml.cluster import FileStore
from axonml.errors import RendezvousError


def test_two_stores_on_one_file_with_threads_add_atomically(tmp_path):
    path = tmp_path / "s"
    stores = [FileStore(path), FileStore(path)]
    returned = []
    lock = threading.Lock()

    def work(store):
        mine = [store.add("n", 1) for _ in range(150)]
        with lock:
            returned.extend(mine)

    threads = [threading.Thread(target=work, args=(stores[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(returned) == list(range(1, 601))
    assert stores[0].get("n") == stores[1].get("n") == b"600"
    for s in stores:
        s.close()


def test_get_sees_a_write_through_another_store(tmp_path):
    reader, writer = FileStore(tmp_path / "s", timeout=5), FileStore(tmp_path / "s")
    timer = threading.Timer(0.1, writer.set, args=("k", "v"))
    start = time.monotonic()
    timer.start()
    assert reader.get("k") == b"v"
    timer.join()
    assert time.monotonic() - start < 1.0
    writer.delete("k")
    with pytest.raises(RendezvousError, match=r"file://.*\['k'\]"):
        reader.get("k", timeout=0.05)


def test_world_size_refuses_a_stale_file_and_last_close_deletes_it(tmp_path):
    path = tmp_path / "job.store"
    a, b = FileStore(path, world_size=2), FileStore(str(path), world_size=2)
    with pytest.raises(RendezvousError, match=r"opened by 3 stores but world_size is 2.*left over.*fresh path"):
        FileStore(path, world_size=2)
    a.set("k", "v")
    a.close()
    a.close()  # twice is fine
    assert path.exists()  # one user is still open
    assert b.get("k") == b"v"
    b.close()
    assert not path.exists()


def test_unknown_world_size_keeps_the_file(tmp_path):
    path = tmp_path / "s"
    with FileStore(path) as s:
        s.set("k", "v")
    assert path.exists()
    with FileStore(f"file://{path}") as again:  # a file:// URL works too
        assert again.get("k") == b"v"
        assert again.address == f"file://{path}"
        assert again.num_keys() == 1  # the bookkeeping keys are not counted


def test_a_closed_store_refuses_calls(tmp_path):
    s = FileStore(tmp_path / "s")
    s.close()
    with pytest.raises(RendezvousError, match="is closed"):
        s.set("k", "v")


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    with pytest.raises(RendezvousError, match="not an AxonML file store"):
        FileStore(path)
    assert path.read_text() == "my notes\n"


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RendezvousError, match="does not exist"):
        FileStore(tmp_path / "nowhere" / "s")


@pytest.mark.parametrize("world_size", [0, -2, 1.5, True])
def test_bad_world_size(tmp_path, world_size):
    with pytest.raises(ValueError, match="world_size must be a positive int, or -1"):
        FileStore(tmp_path / "s", world_size=world_size)


def test_a_torn_record_is_cut_off_by_the_next_writer(tmp_path, caplog):
    path = tmp_path / "s"
    first = FileStore(path)
    first.set("ok", "1")
    torn = struct.pack("<BII", 1, 10, 5) + b"abc"
    with open(path, "ab") as f:  # a writer that died halfway through a record
        f.write(torn)
    second = FileStore(path)  # opening writes, so it cuts the torn record first
    assert "dropping a torn record of 12 bytes" in caplog.text
    assert torn not in path.read_bytes()
    second.set("after", "2")
    assert first.get("after", timeout=2) == b"2"
    assert first.get("ok") == b"1" and second.get("ok") == b"1"
    first.close()
    second.close()


def test_a_corrupt_record_is_reported(tmp_path):
    path = tmp_path / "s"
    FileStore(path).close()
    with open(path, "ab") as f:
        f.write(struct.pack("<BII", 9, 1, 1) + b"kv")
    with pytest.raises(RendezvousError, match="corrupt"):
        FileStore(path)
