import io
import time

from stacks_data.progress import bar


def test_a_quick_bar_prints_nothing_even_when_refreshed():
    out = io.StringIO()
    with bar(total=3, file=out) as display:
        display.set_postfix_str("refreshes")  # tqdm alone would draw the bar here, and never end its line
        display.update(3)
    assert out.getvalue() == ""


def test_a_lasting_bar_ends_its_line():
    out = io.StringIO()
    with bar(total=2, file=out) as display:
        for i in range(2):
            display.set_postfix_str(f"step {i}")
            time.sleep(0.4)  # past the bar's 0.5 s delay by the second step
            display.update()
    assert "2/2" in out.getvalue() and out.getvalue().endswith("\n")
