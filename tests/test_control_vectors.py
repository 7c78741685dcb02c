"""llama.cpp control vectors: export to the GGUF llama.cpp reads, read back with the gguf package, import; layer
convention (direction.<k> is added to the output of block k); one-line errors for files that do not fit."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import mlx_interp as mi
from mlx_interp.core.parts import parts
from mlx_interp.errors import MlxInterpError
from mlx_interp.readouts.vectors import VectorSet


def _vs(width: int, layers, site="resid_post") -> VectorSet:
    rng = np.random.default_rng(0)
    return VectorSet({k: rng.standard_normal(width).astype(np.float32) for k in layers}, "m", "diff_of_means", site=site)


def test_export_reads_back_with_the_gguf_package_and_round_trips(tmp_path, smol):
    vs = _vs(smol.width, [3, 10, 29])
    path = mi.export_control_vector(tmp_path / "v.gguf", vs, parts(smol.model).model_type, scale=2.0)
    reader = gguf.GGUFReader(str(path))  # the independent reader: the file is what llama.cpp's loader expects
    arch = reader.get_field("general.architecture")
    assert bytes(arch.parts[-1]).decode() == "controlvector"
    assert bytes(reader.get_field("controlvector.model_hint").parts[-1]).decode() == "llama"
    assert int(reader.get_field("controlvector.layer_count").parts[-1][0]) == 3
    got = {t.name: np.array(t.data) for t in reader.tensors}
    assert sorted(got) == ["direction.10", "direction.29", "direction.3"]
    for k in (3, 10, 29):
        assert got[f"direction.{k}"].dtype == np.float32 and got[f"direction.{k}"].shape == (smol.width,)
        np.testing.assert_array_equal(got[f"direction.{k}"], vs.vectors[k] * np.float32(2.0))
    back = mi.import_control_vector(path, smol)
    assert back.site == "resid_post" and sorted(back.vectors) == [3, 10, 29]
    np.testing.assert_array_equal(back[10], vs.vectors[10] * np.float32(2.0))


def test_resid_pre_maps_to_the_previous_blocks_output(tmp_path, smol):
    """resid_pre at layer l is the output of block l-1, which llama.cpp steers as direction.(l-1)."""
    vs = _vs(smol.width, [5], site="resid_pre")
    path = mi.export_control_vector(tmp_path / "pre.gguf", vs, "llama")
    back = mi.import_control_vector(path)
    assert sorted(back.vectors) == [4] and back.site == "resid_post"
    tr_pre = mi.run(smol, ["Paris is"], capture=mi.Capture("resid_pre", [5], "all"), logits="none")
    tr_post = mi.run(smol, ["Paris is"], capture=mi.Capture("resid_post", [4], "all"), logits="none")
    np.testing.assert_array_equal(np.array(tr_pre["resid_pre", 5]), np.array(tr_post["resid_post", 4]))


def test_bad_control_vectors_get_one_line_errors(tmp_path, smol, gemma):
    with pytest.raises(MlxInterpError, match="block 0"):
        mi.export_control_vector(tmp_path / "a.gguf", _vs(smol.width, [0]), "llama")
    with pytest.raises(MlxInterpError, match="site 'attn_out'"):
        mi.export_control_vector(tmp_path / "b.gguf", _vs(smol.width, [2], site="attn_out"), "llama")
    with pytest.raises(MlxInterpError, match="must end in .gguf"):
        mi.export_control_vector(tmp_path / "c.safetensors", _vs(smol.width, [2]), "llama")
    good = mi.export_control_vector(tmp_path / "d.gguf", _vs(smol.width, [2]), "llama")
    with pytest.raises(MlxInterpError, match="never overwritten"):
        mi.export_control_vector(good, _vs(smol.width, [2]), "llama")
    with pytest.raises(MlxInterpError, match="model type 'llama', but gemma"):
        mi.import_control_vector(good, gemma)
    not_gguf = tmp_path / "e.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(MlxInterpError, match="not a GGUF file"):
        mi.import_control_vector(not_gguf)
    other = tmp_path / "f.gguf"  # a GGUF that is a model, not a control vector
    w = gguf.GGUFWriter(str(other), "llama")
    w.add_tensor("blk.0.attn_norm.weight", np.ones(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(MlxInterpError, match="architecture 'llama', not a control vector"):
        mi.import_control_vector(other)
    wide = mi.export_control_vector(tmp_path / "g.gguf", _vs(7, [2]), "llama")
    with pytest.raises(MlxInterpError, match="width 7"):
        mi.import_control_vector(wide, smol)
