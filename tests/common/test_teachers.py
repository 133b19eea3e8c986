import pytest
import torch
from monai.networks.nets import SegResNet

from common.teachers import load_state_dict_strict, load_teacher


def small_net(in_channels: int = 2) -> SegResNet:
    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=2, init_filters=8)


def test_load_teacher_is_frozen_and_in_eval_mode(tmp_path):
    path = tmp_path / "teacher.pt"
    source = small_net()
    torch.save(source.state_dict(), path)
    teacher = load_teacher(small_net(), str(path))
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    for a, b in zip(source.state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_training_checkpoint_entry_can_be_selected(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": small_net().state_dict(), "epoch": torch.tensor(3)}, path)
    load_state_dict_strict(small_net(), str(path), key="model")
    with pytest.raises(KeyError, match="no entry 'network'"):
        load_state_dict_strict(small_net(), str(path), key="network")


def test_missing_checkpoint_says_train_the_teacher_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="Train the teacher first"):
        load_teacher(small_net(), str(tmp_path / "absent.pt"))


def test_mismatching_checkpoint_names_the_shapes(tmp_path):
    path = tmp_path / "mono.pt"
    torch.save(small_net(in_channels=1).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\).*convInit.conv.weight: checkpoint \(8, 1, 3, 3, 3\)"):
        load_teacher(small_net(in_channels=2), str(path))


def test_checkpoint_is_loaded_weights_only(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": small_net()}, path)  # a whole pickled module, refused by weights_only=True
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_teacher(small_net(), str(path))
