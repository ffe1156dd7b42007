from hewn.passes import RemoveIdentity
from tests.helpers import check_pass, op_counts, parse


def test_identity_chain_and_inference_dropout_removed():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2, 3] x) => (float[2, 3] y) {
        a = Identity(x)
        b = Relu(a)
        c = Dropout(b)
        d = Identity(c)
        y = Sigmoid(d)
    }""")
    out, result = check_pass(model, RemoveIdentity())
    assert op_counts(out) == {"Relu": 1, "Sigmoid": 1}
    assert result.stats == {"identity_removed": 2, "dropout_removed": 1}


def test_identity_writing_a_graph_output_keeps_the_output_name():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[4] x) => (float[4] y) {
        r = Relu(x)
        y = Identity(r)
    }""")
    out, _ = check_pass(model, RemoveIdentity())
    assert op_counts(out) == {"Relu": 1}
    assert out.graph.output[0].name == "y" and out.graph.node[0].output[0] == "y"


def test_identity_from_input_to_output_is_kept():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[4] x) => (float[4] y) { y = Identity(x) }""")
    _, result = check_pass(model, RemoveIdentity(), expect_modified=False)
    assert result.stats["kept"]


def test_training_mode_dropout_and_used_mask_are_kept():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[4] x) => (float[4] y, bool[4] m) {
        y, m = Dropout(x)
    }""")
    check_pass(model, RemoveIdentity(), expect_modified=False)
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[4] x) => (float[4] y) {
        t = Constant<value = bool {0}>()
        r = Constant<value = float {0.5}>()
        a = Relu(x)
        y = Dropout(a, r, t)
    }""")
    out, _ = check_pass(model, RemoveIdentity())
    assert "Dropout" not in op_counts(out)
