from hewn.passes import EliminateDeadNodes
from tests.helpers import check_pass, op_counts, parse


def test_dead_branch_removed_unused_input_kept():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[4] x, float[4] unused) => (float[4] y) {
        dead = Exp(x)
        dead2 = Sigmoid(dead)
        y = Relu(x)
    }""")
    out, result = check_pass(model, EliminateDeadNodes())
    assert op_counts(out) == {"Relu": 1}
    assert result.stats == {"nodes_removed": 2}
    assert [i.name for i in out.graph.input] == ["x", "unused"]
