"""translate.py streams: a line written to its standard input is answered before the next one is written, and a
file of many chunks gives, line for line, what translating it in one call gives."""

import gzip
import queue
import subprocess
import sys
import threading

from helpers import ROOT, run_script, script_env
from test_end_to_end import SENTENCES, assert_translates


def test_each_line_is_answered_as_soon_as_it_is_written(demo_run, translator):
    expected = translator.translate(SENTENCES)
    assert_translates(expected)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "translate.py"), "--checkpoint", str(demo_run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env(),
    )  # fmt: skip
    answers: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [answers.put(line) for line in process.stdout], daemon=True).start()
    try:
        for sentence, translation in zip(SENTENCES, expected, strict=True):
            process.stdin.write(sentence + "\n")
            process.stdin.flush()  # the input stays open: only an answer per line lets this loop go on
            assert answers.get(timeout=120) == translation + "\n"
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


def test_a_file_of_many_chunks_translates_line_for_line_as_one_call(demo_run, translator, tmp_path):
    lines = [SENTENCES[i % 3] if i % 7 else "" for i in range(1300)]  # 64 × 8 = 512 lines a chunk: three chunks
    lines[5] = "A LONG LINE " * 40
    expected = translator.translate(lines)
    plain, packed, out = tmp_path / "in.en", tmp_path / "in.en.gz", tmp_path / "out.fr"
    plain.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for source in (plain, packed):
        result = run_script("translate.py", "--checkpoint", str(demo_run), "--input", str(source), "--output", str(out))
        assert result.returncode == 0, result.stderr
        assert out.read_text(encoding="utf-8").split("\n")[:-1] == expected
    piped = run_script("translate.py", "--checkpoint", str(demo_run), stdin=plain.read_text())
    assert piped.stdout.split("\n")[:-1] == expected
