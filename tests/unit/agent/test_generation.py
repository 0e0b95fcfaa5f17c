from edge_agent.generation import DoneEvent, GenerationRequest, StopMatcher, TokenEvent, Utf8Assembler


def feed_all(matcher, pieces):
    out, stopped = [], False
    for p in pieces:
        text, stopped = matcher.feed(p)
        out.append(text)
        if stopped:
            break
    return "".join(out), stopped


def test_stop_string_inside_one_piece_is_cut_and_not_shown():
    assert feed_all(StopMatcher(["END"]), ["hello END world"]) == ("hello ", True)


def test_stop_string_split_across_pieces_is_found():
    assert feed_all(StopMatcher(["\n\nQ:"]), ["A: yes", "\n", "\nQ", ":", " more"]) == ("A: yes", True)


def test_partial_match_is_held_back_then_released():
    m = StopMatcher(["STOP"])
    assert m.feed("ab ST") == ("ab ", False)
    assert m.feed("AR") == ("STAR", False)


def test_held_text_is_flushed_at_the_end():
    m = StopMatcher(["STOP"])
    assert m.feed("xy ST") == ("xy ", False)
    assert m.flush() == "ST"


def test_earliest_of_several_stops_wins():
    assert feed_all(StopMatcher(["b", "a"]), ["xxabc"]) == ("xx", True)


def test_no_stops_passes_text_through():
    m = StopMatcher([])
    assert m.feed("anything") == ("anything", False)
    assert m.flush() == ""


def test_utf8_character_split_across_tokens_is_emitted_once_whole():
    euro = "€".encode()
    a = Utf8Assembler()
    assert a.feed(euro[:1]) == ""
    assert a.feed(euro[1:2]) == ""
    assert a.feed(euro[2:] + b"!") == "€!"


def test_utf8_truncated_at_end_becomes_replacement_character():
    a = Utf8Assembler()
    assert a.feed("é".encode()[:1]) == ""
    assert a.flush() == "\ufffd"


def test_new_fields_default_to_what_one_plain_generation_had():
    # Code written before n, logprobs, grammar and cached prompt tokens builds the same events and requests.
    assert TokenEvent("a") == TokenEvent("a", 0, ())
    assert DoneEvent("stop", 3, 2) == DoneEvent("stop", 3, 2, index=0, cached_tokens=0)
    request = GenerationRequest((1, 2), 8)
    assert (request.n, request.logprobs, request.sampling.grammar) == (1, None, None)
