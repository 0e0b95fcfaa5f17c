"""What the CLIs print of strings others chose: controls, C1, DEL and bidi formatting shown as escapes."""

import io

import pytest

from edgefleet.terminal import printable, safe_print


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("\x1b[2Jnode", "\\x1b[2Jnode"),  # clear screen
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # set the window title
        ("a\x9b31mb", "a\\x9b31mb"),  # C1 CSI
        ("a\x9dtitle\x9c", "a\\x9dtitle\\x9c"),  # C1 OSC ... ST
        ("x\x7fy\x00z", "x\\x7fy\\x00z"),
        ("line\nforged: yes\r\tend", "line\\nforged: yes\\r\\tend"),
        ("node-\u202e1-edon", "node-\\u202e1-edon"),  # right-to-left override
        (
            "\u2066a\u2067b\u2068c\u2069\u202a\u202b\u202c\u202d",
            "\\u2066a\\u2067b\\u2068c\\u2069\\u202a\\u202b\\u202c\\u202d",
        ),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
    ],
)
def test_controls_and_bidi_formatting_are_shown_as_escapes(raw, shown):
    assert printable(raw) == shown


def test_everything_else_is_left_as_it_was():
    text = 'node-1 région=eu 東京 émoji🙂 C:\\path ~!@#$%^&*()_+{}|:"<>?` \u00a0nbsp \u00ad'
    assert printable(text) == text


def test_no_raw_control_survives_whatever_the_input():
    every = "".join(map(chr, range(0x0, 0x3000)))
    out = printable(every)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
    assert not set(out) & {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)}


def test_safe_print_writes_one_line_whatever_the_values_hold():
    out = io.StringIO()
    safe_print("host:", "evil\n\x1b[2Jforged", file=out)
    safe_print(file=out)
    assert out.getvalue() == "host: evil\\n\\x1b[2Jforged\n\n"
