"""Issue 19: SDP offers are capped (media sections, codecs per section, lines) and checked for
a supported video codec before aiortc parses them."""

from __future__ import annotations

from streamer.webrtc.sdp import (
    MAX_CODECS_PER_SECTION,
    MAX_LINES,
    MAX_MEDIA_SECTIONS,
    offer_problem,
)

HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def video(codecs: list[str], extra_lines: int = 0) -> str:
    pts = range(96, 96 + len(codecs))
    lines = [f"m=video 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, pts))}", "a=rtcp-mux"]
    lines += [f"a=rtpmap:{pt} {codec}/90000" for pt, codec in zip(pts, codecs, strict=True)]
    lines += [f"a=rtcp-fb:{pts[0]} nack"] * extra_lines
    return "\r\n".join(lines) + "\r\n"


def test_a_browser_like_offer_passes():
    codecs = ["VP8", "rtx", "VP9", "rtx", "H264", "rtx", "AV1", "rtx", "red", "ulpfec"] * 2
    offer = HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
    offer += video(codecs, extra_lines=100) + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    assert offer_problem(offer, needs=("video",)) is None


def test_offers_above_the_caps_are_refused_before_parsing():
    too_many_sections = HEAD + video(["VP8"]) * (MAX_MEDIA_SECTIONS + 1)
    assert "media sections" in offer_problem(too_many_sections, needs=("video",))
    too_many_codecs = HEAD + video(["VP8"] * (MAX_CODECS_PER_SECTION + 1))
    assert "codecs" in offer_problem(too_many_codecs, needs=("video",))
    too_many_lines = HEAD + video(["VP8"], extra_lines=MAX_LINES)
    assert "lines" in offer_problem(too_many_lines, needs=("video",))


def test_an_offer_without_a_supported_video_codec_says_so():
    problem = offer_problem(HEAD + video(["AV1", "VP9"]), needs=("video",))
    assert "no supported video codec" in problem and "AV1" in problem.upper()
    assert "H264" in problem and "VP8" in problem
