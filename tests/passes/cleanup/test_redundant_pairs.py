from hewn.passes import FoldRedundantPairs
from tests.helpers import check_pass, op_counts, parse


def test_transpose_pairs_compose_and_identity_disappears():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2, 3, 4] x) => (float[3, 4, 2] y, float[2, 3, 4] z) {
        t = Transpose<perm = [1, 0, 2]>(x)
        y = Transpose<perm = [0, 2, 1]>(t)
        w = Relu(x)
        u = Transpose<perm = [2, 0, 1]>(w)
        z = Transpose<perm = [1, 2, 0]>(u)
    }""")
    out, result = check_pass(model, FoldRedundantPairs())
    assert op_counts(out) == {"Transpose": 1, "Relu": 1}
    assert result.stats == {"transpose_pairs_merged": 2, "identity_transposes_removed": 1}


def test_reshape_pairs_and_noop_reshapes():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2, 3, 4] x) => (float[6, 4] y, float[2, 3, 4] z) {
        s1 = Constant<value = int64[2] {4, 6}>()
        s2 = Constant<value = int64[2] {6, -1}>()
        a = Reshape(x, s1)
        y = Reshape(a, s2)
        s3 = Constant<value = int64[3] {2, 3, 4}>()
        w = Relu(x)
        z = Reshape(w, s3)
    }""")
    out, result = check_pass(model, FoldRedundantPairs())
    assert op_counts(out) == {"Constant": 1, "Reshape": 1, "Relu": 1}
    assert result.stats == {"reshape_pairs_merged": 1, "noop_reshapes_removed": 1}


def test_reshape_pair_with_copy_zero_is_kept():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2, 3, 4] x) => (float[4, 3, 2] y) {
        s1 = Constant<value = int64[2] {4, 6}>()
        s2 = Constant<value = int64[3] {0, 3, -1}>()
        a = Reshape(x, s1)
        y = Reshape(a, s2)
    }""")
    check_pass(model, FoldRedundantPairs(), expect_modified=False)


def test_lossless_cast_pairs_fold_lossy_ones_stay():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[5] x) => (float[5] y, float[5] z) {
        w = Relu(x)
        a = Cast<to = 11>(w)
        y = Cast<to = 1>(a)
        b = Cast<to = 6>(x)
        z = Cast<to = 1>(b)
    }""")
    out, result = check_pass(model, FoldRedundantPairs())
    # float -> double -> float is the identity; float -> int32 -> float truncates and must stay.
    assert op_counts(out) == {"Relu": 1, "Cast": 2}
    assert result.stats == {"cast_pairs_merged": 1, "noop_casts_removed": 1}
