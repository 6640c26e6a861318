import json
import os
import subprocess
import sys

import pytest

from emotionclip._io import OUTPUT_MARKER, OutputDirError, atomic_write, claim_output_dir


def test_new_folder_is_marked_and_reopened(tmp_path):
    out = tmp_path / "out"
    with claim_output_dir(out, "analyze") as d:
        (d / "a.txt").write_text("x")
    assert json.loads((out / OUTPUT_MARKER).read_text())["tool"] == "analyze"
    with claim_output_dir(out, "analyze"):
        pass


def test_user_folder_file_and_other_tool_are_refused(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "summary.json").write_text("{}")
    with pytest.raises(OutputDirError, match="did not write"):
        with claim_output_dir(user, "analyze"):
            pass
    assert (user / "summary.json").read_text() == "{}"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        with claim_output_dir(f, "prepare"):
            pass
    with claim_output_dir(tmp_path / "p", "prepare"):
        pass
    with pytest.raises(OutputDirError, match="emotionclip prepare"):
        with claim_output_dir(tmp_path / "p", "analyze"):
            pass


def test_second_process_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "out"
    code = (
        "import sys\nfrom emotionclip._io import claim_output_dir, OutputDirError\n"
        f"try:\n    with claim_output_dir({str(out)!r}, 'train'):\n        pass\n"
        "except OutputDirError as e:\n    print(e)\n"
    )
    with claim_output_dir(out, "train"):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert f"pid {os.getpid()}" in res.stdout
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout == ""  # released: the second run goes through


def test_atomic_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    os.umask(old)
    atomic_write(tmp_path / "f.json", "{}")
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~old
