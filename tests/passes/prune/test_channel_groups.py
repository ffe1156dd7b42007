"""The channel rule table, one row at a time, on small graphs: which channels group together
and why a group is refused."""
import numpy as np
import pytest

from hewn.core.ir import to_graph
from hewn.core.pass_infra import Context
from hewn.passes import ChannelGroups
from hewn.passes.prune.channel_rules import reshape_pairs, reshape_segments, Block
from hewn.targets import CPU
from tests.helpers import parse

HEAD = "<ir_version: 8, opset_import: [\"\" : 17]>"


def groups_of(text):
    graph = to_graph(parse(text))
    return Context(CPU).analysis(ChannelGroups, graph).result


def widths(analysis):
    return sorted((f.width, f.blocked is None) for f in analysis.families)


def test_residual_add_couples_both_branches():
    text = HEAD + """
    agraph (float[1,3,8,8] x) => (float[1,4,8,8] y)
    <float[6,3,3,3] w1 = {%s}, float[6,3,1,1] w2 = {%s}, float[4,6,1,1] w3 = {%s}> {
        a = Conv <pads=[1,1,1,1]> (x, w1)
        b = Conv (x, w2)
        s = Add(a, b)
        r = Relu(s)
        y = Conv (r, w3)
    }""" % (",".join(["0.1"] * 162), ",".join(["0.2"] * 18), ",".join(["0.3"] * 24))
    a = groups_of(text)
    fams = a.prunable()
    assert len(fams) == 1 and fams[0].width == 6
    roles = sorted(e.role for e in a.family_edits(fams[0]))
    assert roles == ["producer", "producer", "sink"]


def _weights(n, v=0.1):
    return ",".join([str(v)] * n)


def test_concat_offsets_keep_each_producer_separate():
    text = HEAD + """
    agraph (float[1,3,4,4] x) => (float[1,2,4,4] y)
    <float[4,3,1,1] w1 = {%s}, float[5,3,1,1] w2 = {%s}, float[2,9,1,1] w3 = {%s}> {
        a = Conv (x, w1)
        b = Conv (x, w2)
        c = Concat <axis=1> (a, b)
        y = Conv (c, w3)
    }""" % (_weights(12), _weights(15), _weights(18))
    a = groups_of(text)
    assert sorted(f.width for f in a.prunable()) == [4, 5]
    # the second producer's channel 0 is concat channel 4: the sink edit must say so
    fam5 = next(f for f in a.prunable() if f.width == 5)
    sink = next(e for e in a.family_edits(fam5) if e.role == "sink")
    first = a.groups[fam5.groups[0]].members[a.index[sink.space]]
    assert sink.index[np.isin(sink.elems, first)].tolist() == [4]


def test_depthwise_conv_ties_input_and_output_channels():
    text = HEAD + """
    agraph (float[1,3,4,4] x) => (float[1,2,4,4] y)
    <float[6,3,1,1] w1 = {%s}, float[6,1,3,3] wd = {%s}, float[2,6,1,1] w3 = {%s}> {
        a = Conv (x, w1)
        d = Conv <group=6, pads=[1,1,1,1]> (a, wd)
        y = Conv (d, w3)
    }""" % (_weights(18), _weights(54), _weights(12))
    a = groups_of(text)
    (fam,) = a.prunable()
    assert fam.width == 6
    assert {a.ops[e.op].kind for e in a.family_edits(fam)} == {"Conv"}
    assert "group" in a.shape_edits.values()


def test_grouped_conv_is_refused_with_the_reason():
    text = HEAD + """
    agraph (float[1,3,4,4] x) => (float[1,2,4,4] y)
    <float[6,3,1,1] w1 = {%s}, float[6,2,1,1] wg = {%s}, float[2,6,1,1] w3 = {%s}> {
        a = Conv (x, w1)
        g = Conv <group=3> (a, wg)
        y = Conv (g, w3)
    }""" % (_weights(18), _weights(12), _weights(12))
    a = groups_of(text)
    assert not a.prunable()
    assert any("group=3" in (f.blocked or "") for f in a.families)


def test_layernorm_over_the_channels_blocks_and_names_the_node():
    text = HEAD + """
    agraph (float[2,5,8] x) => (float[2,5,4] y)
    <float[8,6] w1 = {%s}, float[6] s = {1,1,1,1,1,1}, float[6,4] w2 = {%s}> {
        a = MatMul(x, w1)
        n = LayerNormalization <axis=-1> (a, s)
        y = MatMul(n, w2)
    }""" % (_weights(48), _weights(24))
    a = groups_of(text)
    assert not a.prunable()
    assert any("LayerNormalization" in (f.blocked or "") for f in a.families)


def test_unknown_op_blocks_its_groups():
    text = HEAD + """
    agraph (float[1,3,4,4] x) => (float[1,2,4,4] y)
    <float[6,3,1,1] w1 = {%s}, float[2,6,1,1] w3 = {%s}> {
        a = Conv (x, w1)
        h = Hardmax <axis=1> (a)
        y = Conv (h, w3)
    }""" % (_weights(18), _weights(12))
    a = groups_of(text)
    assert not a.prunable()
    assert any("rule table" in (f.blocked or "") for f in a.families)


def test_flatten_into_gemm_maps_each_channel_to_its_spatial_block():
    text = HEAD + """
    agraph (float[1,3,2,2] x) => (float[1,5] y)
    <float[4,3,1,1] w1 = {%s}, float[5,16] w2 = {%s}> {
        a = Conv (x, w1)
        f = Flatten <axis=1> (a)
        y = Gemm <transB=1> (f, w2)
    }""" % (_weights(12), _weights(80))
    a = groups_of(text)
    (fam,) = a.prunable()
    sink = next(e for e in a.family_edits(fam) if e.role == "sink")
    for k, gid in enumerate(fam.groups):
        elems = a.groups[gid].members[a.index[sink.space]]
        assert sorted(sink.index[np.isin(sink.elems, elems)].tolist()) == [4 * k + i for i in range(4)]


def test_reshape_segments_and_pairs():
    assert reshape_segments([1, 128, 384], [1, 128, 12, 32]) == [([0], [0]), ([1], [1]), ([2], [2, 3])]
    assert reshape_segments([2, 6], [3, 4]) == [([0, 1], [0, 1])]   # no finer alignment exists
    assert reshape_segments([2, 6], [5]) is None
    axes, x, y = reshape_pairs((1, 6, 2), (1,), (1, 12))  # flatten: channel c -> positions 2c, 2c+1
    assert axes == (1,) and x.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and y.tolist() == list(range(12))
    with pytest.raises(Block):
        reshape_pairs((2, 6), (1,), (5, 2))
