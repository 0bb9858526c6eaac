"""Format descriptors: notation round-trips, ranges match the published formats."""
import pytest

from protocol.formats import PRESETS, BlockFormat, FixedFormat, FloatFormat, FormatError, parse_format


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip(name):
    fmt = PRESETS[name]
    assert repr(fmt) == name
    assert parse_format(repr(fmt)) == fmt


@pytest.mark.parametrize("name, bits, max_value, min_sub", [
    ("fp32", 32, 3.4028234663852886e38, 2.0 ** -149),
    ("fp16", 16, 65504.0, 2.0 ** -24),
    ("bf16", 16, 3.3895313892515355e38, 2.0 ** -133),
    ("e4m3fn", 8, 448.0, 2.0 ** -9),     # OCP: no inf, NaN only at S.1111.111
    ("e5m2", 8, 57344.0, 2.0 ** -16),
    ("e3m2", 6, 28.0, 2.0 ** -4),        # OCP FP6: all patterns finite
    ("e2m3", 6, 7.5, 2.0 ** -3),
    ("e2m1", 4, 6.0, 0.5),               # OCP FP4
    ("fp16_ibm", 16, (2 - 2 ** -9) * 2.0 ** 31, 2.0 ** -39),
])
def test_float_ranges(name, bits, max_value, min_sub):
    fmt = parse_format(name)
    assert (fmt.bits, fmt.max_value, fmt.min_subnormal) == (bits, max_value, min_sub)


def test_fixed_gupta_ranges():
    f = parse_format("fixed<1,7>")
    assert (f.bits, f.eps, f.min_value, f.max_value) == (8, 2 ** -7, -1.0, 1 - 2 ** -7)
    u = parse_format("ufixed<2,6>")
    assert (u.min_value, u.max_value) == (0.0, 4 - 2 ** -6)
    assert parse_format("fixed<4,4,wrap>").overflow == "wrap"


def test_notation_forms():
    assert parse_format("float<4,3,fn>") == parse_format("e4m3fn") == PRESETS["e4m3fn"]
    assert parse_format("E5M2") == FloatFormat(5, 2)
    assert parse_format("float16") == PRESETS["fp16"]
    assert parse_format("bfp<8,16>") == BlockFormat(FixedFormat(1, 7), 16)
    assert parse_format("bfp<e4m3fn,32>") == PRESETS["mxfp8"]
    assert parse_format("bfp<16,*,e5,ceil>") == PRESETS["flex16+5"]
    f = parse_format("float<5,2,nosub,bias=14>")
    assert (f.subnormals, f.bias, repr(f)) == (False, 14, "float<5,2,nosub,bias=14>")


@pytest.mark.parametrize("bad, fragment", [
    ("e4m3x", "accepted forms"),
    ("fixed<0,3>", "int_bits >= 1"),
    ("float<1,0>", "at least 2 exponent bits"),
    ("float<4,3,inf,finite>", "needs specials='ieee'"),
    ("float<4,3,zzz>", "unknown float option"),
    ("fixed<40,20>", "1..53"),
    ("bfp<mxfp8,4>", "cannot be the element"),
    ("", "accepted forms"),
])
def test_bad_strings_say_what_is_accepted(bad, fragment):
    with pytest.raises(FormatError, match=fragment):
        parse_format(bad)


def test_descriptor_arguments_checked():
    with pytest.raises(FormatError, match="one of 'ieee', 'fn', 'finite'"):
        FloatFormat(4, 3, specials="nope")
    with pytest.raises(FormatError, match="block must be"):
        BlockFormat(FixedFormat(1, 7), 0)
