import pytest

from common.keys import IMAGE, LABEL, STUDENT, check_teacher_name, feature_key, parse_key, tapped_layers
from common.losses import DistillationLoss, LogitDistillationLoss


def test_feature_keys_name_the_owner_and_the_module_path():
    assert feature_key(STUDENT, "down_layers.3") == "student:down_layers.3"
    assert feature_key("flair_teacher", "up.0") == "flair_teacher:up.0"


def test_tapped_layers_are_grouped_by_owner_and_plain_keys_need_no_tap():
    keys = [
        STUDENT,
        LABEL,
        IMAGE,
        "teacher",
        "student:down_4",
        "teacher:down_4",
        "teacher:recon_head",
        "student:down_4",
    ]
    assert tapped_layers(keys, ["teacher", "other"]) == {
        "student": ["down_4"],
        "teacher": ["down_4", "recon_head"],
        "other": [],
    }


def test_keys_parse_into_owner_and_layer_and_malformed_ones_are_refused_by_the_loss_too():
    assert parse_key("teacher:down_layers.3") == ("teacher", "down_layers.3")
    assert parse_key("student") == ("student", None)
    for key in ("student:", ":down_4", ""):
        with pytest.raises(ValueError, match="malformed"):
            parse_key(key)
    with pytest.raises(ValueError, match="term 'kd': loss input 'student:' is malformed"):
        DistillationLoss({"kd": {"loss": LogitDistillationLoss(), "inputs": ["student:", "teacher"]}})


@pytest.mark.parametrize("key", ["mentor", "mentor:down_4", "label:down_4"])
def test_a_key_naming_no_source_lists_the_valid_forms(key):
    with pytest.raises(ValueError, match=rf"loss input '{key}' names no known source.*'student', 'label', 'image'"):
        tapped_layers([key], ["teacher"])


@pytest.mark.parametrize("name", ["student", "label", "image", "a:b", ""])
def test_reserved_or_ambiguous_teacher_names_are_refused(name):
    with pytest.raises(ValueError, match="reserved"):
        check_teacher_name(name)
    assert check_teacher_name("flair_teacher") == "flair_teacher"


def test_the_labelled_mask_is_reserved_but_no_term_input():
    with pytest.raises(ValueError, match="reserved"):
        check_teacher_name("labelled")
    with pytest.raises(ValueError, match="'labelled' names no known source"):
        tapped_layers(["labelled"], ["teacher"])
