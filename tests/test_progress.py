import io
import time

from stacks_data import progress
from stacks_data.progress import bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_quick_bar_prints_nothing_even_when_refreshed():
    out = Terminal()
    with bar(total=3, file=out) as display:
        display.set_postfix_str("refreshes")  # tqdm alone would draw the bar here, and never end its line
        display.update(3)
    assert out.getvalue() == ""


def test_a_lasting_bar_ends_its_line():
    out = Terminal()
    with bar(total=2, file=out) as display:
        for i in range(2):
            display.set_postfix_str(f"step {i}")
            time.sleep(0.4)  # past the bar's 0.5 s delay by the second step
            display.update()
    assert "2/2" in out.getvalue() and out.getvalue().endswith("\n")


def test_a_log_gets_whole_plain_lines_now_and_then(monkeypatch):
    out = io.StringIO()  # a file or a pipe: no terminal
    with bar(total=4, desc="tokenize", unit="shard", file=out) as display:
        display.update(1)
        assert out.getvalue() == ""  # not yet: a line every LINE_EVERY seconds
        monkeypatch.setattr(progress, "LINE_EVERY", 0.0)
        display.set_postfix_str("out 1.00M tok/s")
        display.update(1)
    lines = out.getvalue().splitlines()
    assert lines == ["tokenize: 2/4 shard (50%), out 1.00M tok/s"] * 2  # then the last line, at the end
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_quick_step_in_a_log_prints_no_progress():
    out = io.StringIO()
    assert list(bar(iterable=range(3), total=3, desc="x", file=out)) == [0, 1, 2]
    assert out.getvalue() == ""
