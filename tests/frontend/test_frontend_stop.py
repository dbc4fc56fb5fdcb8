"""Stop strings: found across pieces, never partly emitted, cut with everything after them."""

from __future__ import annotations

import pytest

from frontend.text.stop import StopMatcher


def feed(stops: list[str], pieces: list[str]) -> tuple[str, bool, list[str]]:
    matcher = StopMatcher(stops)
    emitted = []
    for piece in pieces:
        text, stopped = matcher.push(piece)
        emitted.append(text)
        if stopped:
            return "".join(emitted), True, emitted
    emitted.append(matcher.flush())
    return "".join(emitted), False, emitted


def test_no_stops_passes_text_through():
    assert feed([], ["a", "b"]) == ("ab", False, ["a", "b", ""])


def test_stop_inside_one_piece_cuts_it_and_the_rest():
    assert feed(["END"], ["abcENDxyz", "more"])[:2] == ("abc", True)


def test_stop_split_over_pieces_is_held_back_then_dropped():
    text, stopped, emitted = feed(["</answer>"], ["42 </", "ans", "wer> tail"])
    assert (text, stopped) == ("42 ", True)
    assert emitted == ["42 ", "", ""]  # "</" and "ans" were never sent


def test_partial_match_that_fails_is_released():
    text, stopped, emitted = feed(["STOP"], ["go ST", "ART now"])
    assert (text, stopped) == ("go START now", False)
    assert emitted[0] == "go "  # "ST" held: it could have begun "STOP"


def test_held_text_is_flushed_at_the_end():
    assert feed(["\n\n"], ["line\n"]) == ("line\n", False, ["line", "\n"])


def test_earliest_of_several_stops_wins():
    assert feed(["world", "lo w"], ["hello world"])[:2] == ("hel", True)


def test_stop_that_starts_in_held_text_and_overlaps():
    # "aab": after "aa" is held, a failed "aab"-prefix must still find the stop later
    assert feed(["aab"], ["xa", "a", "ab"])[:2] == ("xa", True)


@pytest.mark.parametrize("piece_size", [1, 2, 3, 5])
def test_piece_boundaries_do_not_change_the_result(piece_size: int):
    text = "The answer is 42.\nUser: next question"
    pieces = [text[i : i + piece_size] for i in range(0, len(text), piece_size)]
    assert feed(["\nUser:", "Assistant:"], pieces)[:2] == ("The answer is 42.", True)


def test_empty_stop_strings_are_ignored():
    assert feed([""], ["abc"])[:2] == ("abc", False)
