"""Which embedding a checkpoint is run with (--embedding auto|embed_1|embed_2): embed_2 equals a hand
transcription of OpenGait's DeepGaitV2 with use_emb2, auto follows OpenGait's released configs, other models and
ONNX graphs refuse embed_2, and a gallery file refuses features of another embedding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from allinone.config import GaitConfig
from allinone.errors import UserError
from allinone.gait import ARCHS, DeepGaitV2, GaitBase, GaitEmbedder
from allinone.gait.checkpoint import resolve_embedding
from tests.gait.test_gait_zoo import K, deepgaitv2_p3d_reference, randomized, save_opengait, sils


def bnneck_reference(sd, embed_1):
    """OpenGait opengait/modeling/modules.py SeparateBNNecks.forward (parallel_BN1d=True, norm=True), lines
    131-150: x.view(n, -1) → bn1d → view(n, c, p); feature = x.permute(2, 0, 1); F.normalize(feature, dim=-1)
    (over c, per part); returned permuted back to [n, c, p]. deepgaitv2.py lines 117-120: with use_emb2 the
    inference embedding is that feature, embed_2."""
    n, c, p = embed_1.shape
    x = F.batch_norm(embed_1.reshape(n, c * p), sd["BNNecks.bn1d.running_mean"], sd["BNNecks.bn1d.running_var"],
                     sd["BNNecks.bn1d.weight"], sd["BNNecks.bn1d.bias"], training=False, eps=1e-5)
    x = x.reshape(n, c, p)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


@pytest.fixture(scope="module")
def dgv2(tmp_path_factory):
    model = randomized(DeepGaitV2(K, "p3d", (1, 2, 2, 1), (8, 16, 32, 64)), seed=11)
    return model, save_opengait(model, tmp_path_factory.mktemp("emb") / "dgv2.pt")


def test_embed_2_equals_opengait_use_emb2_transcription(dgv2):
    model, path = dgv2
    sd = model.state_dict()
    x = sils(2, 7, seed=3)
    seqs = [(x[i].numpy() * 255).astype(np.uint8) for i in range(2)]  # [s, 64, 44]; the input divides by 255
    e2 = GaitEmbedder(GaitConfig(model=str(path), embedding="embed_2"), "cpu")
    e1 = GaitEmbedder(GaitConfig(model=str(path), embedding="embed_1"), "cpu")
    assert (e2.embedding, e1.embedding) == ("embed_2", "embed_1")
    with torch.inference_mode():
        ref1 = deepgaitv2_p3d_reference(sd, x)
        ref2 = bnneck_reference(sd, ref1)
    got2, got1 = np.stack(e2(seqs)), np.stack(e1(seqs))
    np.testing.assert_allclose(got1, ref1.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got2, ref2.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got2, axis=1), 1.0, rtol=1e-5)  # unit length per part
    assert np.abs(got1 - got2).max() > 0.1


def test_auto_follows_opengaits_released_configs(dgv2):
    _, path = dgv2
    assert GaitEmbedder(GaitConfig(model=str(path)), "cpu").embedding == "embed_1"  # use_emb2 unset: False
    dg = ARCHS["deepgaitv2"]
    # configs/skeletongait/skeletongait_CCPG.yaml: model DeepGaitV2, in_channels 2, class_num 100, use_emb2 true
    assert resolve_embedding("auto", dg, {"in_channels": 2, "class_num": 100}) == "embed_2"
    # configs/deepgaitv2/DeepGaitV2_ccpg.yaml (in_channels 1, class_num 100) and skeletongait_GREW.yaml
    # (in_channels 2, class_num 20000) leave use_emb2 unset
    assert resolve_embedding("auto", dg, {"in_channels": 1, "class_num": 100}) == "embed_1"
    assert resolve_embedding("auto", dg, {"in_channels": 2, "class_num": 20000}) == "embed_1"
    for arch in ("gaitbase", "gaitset", "gaitpart", "gaitgl"):
        assert resolve_embedding("auto", ARCHS[arch], {"in_channels": 1, "class_num": 100}) == "embed_1"


def test_embed_2_is_refused_where_opengait_has_no_use_emb2(tmp_path):
    torch.manual_seed(0)
    path = save_opengait(GaitBase(class_num=K), tmp_path / "gb.pt")
    with pytest.raises(UserError) as err:
        GaitEmbedder(GaitConfig(model=str(path), embedding="embed_2"), "cpu")
    assert "gb.pt" in str(err.value) and "no embed_2" in str(err.value)


def test_a_gallery_file_refuses_features_of_another_embedding(tmp_path):
    from allinone.gallery.store import GalleryStore, ModelInfo

    with GalleryStore(tmp_path / "g.db", create=True) as store:
        store.add([], ModelInfo("ab" * 32, "m.pt", "deepgaitv2", "euc", "embed_2"))
        store.check_model(ModelInfo("ab" * 32, "m.pt", "deepgaitv2", "euc", "embed_2"))
        with pytest.raises(UserError) as err:
            store.check_model(ModelInfo("ab" * 32, "m.pt", "deepgaitv2", "euc", "embed_1"))
        assert "g.db" in str(err.value) and "embed_2" in str(err.value)
