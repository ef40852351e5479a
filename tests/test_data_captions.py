"""Caption files and the choice of a clip's 5 sentences."""

import json

import pytest

from vatt.data.captions import Caption, CaptionError, parse_subtitles, read_captions, select_captions

SRT = """1
00:00:00,000 --> 00:00:02,000
first <i>line</i>

2
00:00:02,500 --> 00:00:04,000
second line

3
00:00:05,000 --> 00:00:06,000
third

4
00:00:07,000 --> 00:00:08,500
fourth

5
00:00:10,000 --> 00:00:11,000
fifth

6
00:00:20,000 --> 00:00:21,000
sixth
spans two lines

7
00:00:30,000 --> 00:00:31,000
seventh
"""

VTT = """WEBVTT

00:00.000 --> 00:02.000 align:start
first line

00:02.500 --> 00:04.000
second line
"""


def brute_force_select(caps, center, n):
    """Reference: sort by (distance of the span to the centre, index), take n, restore time order."""
    dist = [0.0 if c.start <= center <= c.end else min(abs(c.start - center), abs(c.end - center)) for c in caps]
    order = sorted(range(len(caps)), key=lambda i: (dist[i], i))[:n]
    return [caps[i].text for i in sorted(order)]


def test_srt_parsing(tmp_path):
    p = tmp_path / "a.srt"
    p.write_text(SRT)
    caps = read_captions(p)
    assert len(caps) == 7
    assert caps[0] == Caption(0.0, 2.0, "first line")  # tags removed
    assert caps[5].text == "sixth spans two lines"
    assert caps[3].start == 7.0 and caps[3].end == 8.5


def test_vtt_and_howto100m_json_give_the_same_captions(tmp_path):
    (tmp_path / "a.vtt").write_text(VTT)
    (tmp_path / "a.json").write_text(json.dumps({"start": [0, 2.5], "end": [2, 4], "text": ["first line", "second line"]}))
    assert read_captions(tmp_path / "a.vtt") == read_captions(tmp_path / "a.json")
    assert [c.text for c in read_captions(tmp_path / "a.vtt")] == ["first line", "second line"]


@pytest.mark.parametrize(
    "center, expected",
    [
        # 5.5 s lies inside "third"; nearest others: second (1.5 s away), fourth (1.5), first (3.5), fifth (4.5)
        (5.5, ["first line", "second line", "third", "fourth", "fifth"]),
        # 14 s lies in a gap: fifth 3.0, fourth 5.5, sixth 6.0, third 8.0, second 10.0 (first 12.0 left out)
        (14.0, ["second line", "third", "fourth", "fifth", "sixth spans two lines"]),
        # 25 s: sixth (4.0), seventh (5.0), fifth (14.0), fourth (16.5), third (19.0)
        (25.0, ["third", "fourth", "fifth", "sixth spans two lines", "seventh"]),
    ],
)
def test_neighbour_selection_on_a_hand_made_subtitle_file(center, expected):
    caps = parse_subtitles(SRT)
    chosen = select_captions(caps, center, 5)
    assert chosen == expected
    assert chosen == brute_force_select(caps, center, 5)


def test_the_caption_at_the_centre_is_always_selected():
    caps = parse_subtitles(SRT)
    for center in (0.5, 3.0, 20.5, 30.5):
        inside = [c.text for c in caps if c.start <= center <= c.end]
        assert inside[0] in select_captions(caps, center, 5)


def test_fewer_captions_than_needed_are_repeated_in_order():
    caps = [Caption(0, 1, "a"), Caption(1, 2, "b")]
    assert select_captions(caps, 0.5, 5) == ["a", "b", "a", "b", "a"]
    assert select_captions([], 0.5, 5) == []


def test_non_utf8_subtitles_are_read_as_latin1(tmp_path):
    p = tmp_path / "l1.srt"
    p.write_bytes("1\n00:00:00,000 --> 00:00:01,000\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    assert read_captions(p)[0].text == "café crème"


def test_malformed_subtitles_raise_caption_error_with_the_path(tmp_path):
    p = tmp_path / "bad.srt"
    p.write_text("1\nnot a time --> never\nhello\n")
    with pytest.raises(CaptionError, match="bad.srt"):
        read_captions(p)
    j = tmp_path / "bad.json"
    j.write_text('{"start": [0], "end": [1, 2], "text": ["x"]}')
    with pytest.raises(CaptionError, match="bad_captions"):
        read_captions(j)


def test_a_long_cue_overlapping_the_centre_wins_over_a_short_cue_with_a_nearer_middle():
    caps = [Caption(0.0, 10.0, "long cue"), Caption(10.5, 11.0, "short"), Caption(20.0, 21.0, "far")]
    # at 9.5 s the long cue is on screen (distance 0) although its middle (5 s) is 4.5 s away
    assert select_captions(caps, 9.5, 1) == ["long cue"]
    assert select_captions(caps, 9.5, 2) == ["long cue", "short"]
    # at 15 s: short 4.0 s away; long cue and far cue both 5.0 s away -> the earlier one wins the tie
    assert select_captions(caps, 15.0, 2) == ["long cue", "short"]
