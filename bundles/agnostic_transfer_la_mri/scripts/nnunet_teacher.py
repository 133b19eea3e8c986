"""An nnU-Net v2 results folder as a black-box teacher of the annotate stage.

Optional: needs ``pip install --no-deps -r requirements-nnunet.txt`` (nnU-Net 2.8.1 beside the pinned CPU
torch). The folder is what ``nnUNetv2_train`` leaves, ``nnUNet_results/DatasetXXX_Name/
<trainer>__<plans>__<configuration>``: ``plans.json``, ``dataset.json`` and ``fold_<f>/<checkpoint>``.
nnU-Net's own predictor does the work (its preprocessing, sliding window with Gaussian weighting,
mirroring, folds averaged, resampling back), so the probabilities are those ``nnUNetv2_predict
--save_probabilities`` writes, on the image file's own voxel grid.

Checkpoints load with ``weights_only=True``: besides tensors, an nnU-Net checkpoint holds its
training log and best moving-average Dice as numpy scalars, so :data:`CHECKPOINT_ALLOWED_GLOBALS`
admits exactly the numpy scalar and dtype classes those need (no arbitrary code runs on load).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from scripts.annotate import sha256

# what pickle may rebuild besides tensors and Python containers: numpy scalars (np.float64, np.float32,
# np.int64) as nnU-Net's logger and `_best_ema` store them
CHECKPOINT_ALLOWED_GLOBALS = [
    np._core.multiarray.scalar,
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
    np.dtypes.Int64DType,
]
# readers that keep the file's voxel grid; the `...WithReorient` ones resample to RAS and 2-D image readers do not apply
GRID_READERS = ("SimpleITKIO", "NibabelIO")


def _import_nnunet():
    try:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    except ImportError as e:
        raise ImportError(
            f"the nnU-Net teacher needs nnU-Net v2: pip install --no-deps -r requirements-nnunet.txt ({e})."
        ) from e
    return nnUNetPredictor, get_network_from_plans, determine_num_input_channels, PlansManager


def load_checkpoint(path: str) -> dict:
    """An nnU-Net checkpoint, loaded with ``weights_only=True`` and :data:`CHECKPOINT_ALLOWED_GLOBALS`."""
    with torch.serialization.safe_globals(CHECKPOINT_ALLOWED_GLOBALS):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"network_weights", "trainer_name", "init_args"} - set(checkpoint)
    if missing:
        raise ValueError(f"{path} is not an nnU-Net v2 checkpoint: no {sorted(missing)}.")
    return checkpoint


class NnUNetTeacher:
    """A teacher from an nnU-Net v2 results folder (``image file -> class probabilities on its grid``).

    Args:
        name: how logs, errors and the manifest refer to this teacher.
        results_folder: ``<trainer>__<plans>__<configuration>`` folder holding ``plans.json``,
            ``dataset.json`` and ``fold_<f>/<checkpoint_name>``.
        folds: folds to average (nnU-Net averages their logits), e.g. ``[0, 1, 2, 3, 4]`` or ``["all"]``.
        checkpoint_name: ``checkpoint_final.pth`` or ``checkpoint_best.pth``.
        use_mirroring: test-time mirroring along the axes the trainer allowed (8 passes in 3-D).
        tile_step_size: sliding-window step as a fraction of the patch (nnU-Net's default 0.5).
        num_classes: classes the student expects (background included); the dataset's labels must match.
        device: where nnU-Net runs.

    The network is the plans' architecture, as ``nnUNetTrainer`` and its usual variants (epochs,
    learning rate, loss) build it. Refused with a clear error: region-based (sigmoid) models, cascade
    stages, models reading more than one channel (the transferal image is one file), readers that
    reorient, a missing fold, weights of a trainer that builds another network.
    """

    def __init__(
        self,
        name: str,
        results_folder: str,
        folds: Sequence[int | str] = (0,),
        checkpoint_name: str = "checkpoint_final.pth",
        use_mirroring: bool = True,
        tile_step_size: float = 0.5,
        num_classes: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        predictor_class, network_from_plans, input_channels, plans_manager_class = _import_nnunet()
        self.name = name
        where = f"teacher {name!r} (nnU-Net results folder {results_folder})"
        if not results_folder:
            raise ValueError(f"teacher {name!r}: no nnU-Net results folder given (`nnunet_results`).")
        if not folds:
            raise ValueError(f"{where}: no fold given.")
        files = {f: os.path.join(results_folder, f) for f in ("plans.json", "dataset.json")}
        for path in files.values():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{where}: {path} not found; give the folder nnUNetv2_train wrote.")
        checkpoints = [os.path.join(results_folder, f"fold_{f}", checkpoint_name) for f in folds]
        absent = [p for p in checkpoints if not os.path.isfile(p)]
        if absent:
            present = sorted(
                d[len("fold_") :]
                for d in os.listdir(results_folder)
                if d.startswith("fold_") and os.path.isfile(os.path.join(results_folder, d, checkpoint_name))
            )
            raise FileNotFoundError(
                f"{where}: {absent[0]} not found; folds with {checkpoint_name}: {present or 'none'}."
            )
        with open(files["plans.json"]) as f:
            plans = json.load(f)
        with open(files["dataset.json"]) as f:
            dataset = json.load(f)
        self._check_labels(where, dataset, num_classes)
        if plans.get("image_reader_writer") not in GRID_READERS:
            raise ValueError(
                f"{where}: its reader {plans.get('image_reader_writer')!r} does not keep the image's voxel grid; "
                f"supported: {list(GRID_READERS)}."
            )
        loaded = [load_checkpoint(p) for p in checkpoints]
        first = loaded[0]
        configuration = first["init_args"]["configuration"]
        plans_manager = plans_manager_class(plans)
        configuration_manager = plans_manager.get_configuration(configuration)
        if configuration_manager.previous_stage_name is not None:
            raise ValueError(
                f"{where}: configuration {configuration!r} is a cascade stage (it needs the "
                f"{configuration_manager.previous_stage_name!r} prediction); use a single-stage model."
            )
        channels = input_channels(plans_manager, configuration_manager, dataset)
        if channels != 1:
            raise ValueError(
                f"{where}: the model reads {channels} channels ({dataset.get('channel_names')}); the transferal "
                "images are single files, so only one-channel models can label them."
            )
        # the plans' architecture, as nnUNetTrainer builds it: no trainer lookup by name, which imports every
        # trainer module (some need timm, left out of the requirements); a trainer that builds another network
        # shows as a state-dict mismatch
        network = network_from_plans(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            channels,
            plans_manager.get_label_manager(dataset).num_segmentation_heads,
            allow_init=True,
            deep_supervision=False,
        )
        parameters = [c["network_weights"] for c in loaded]
        try:
            network.load_state_dict(parameters[0])
        except RuntimeError as e:
            raise ValueError(
                f"{where}: its weights do not fit the plans' {configuration_manager.network_arch_class_name}; trainer "
                f"{first['trainer_name']!r} builds another network, which this teacher does not support: {e}"
            ) from e
        self.predictor = predictor_class(
            tile_step_size=tile_step_size,
            use_mirroring=use_mirroring,
            perform_everything_on_device=False,
            device=torch.device(device),
            allow_tqdm=False,
        )
        self.predictor.manual_initialization(
            network,
            plans_manager,
            configuration_manager,
            parameters,
            dataset,
            first["trainer_name"],
            first.get("inference_allowed_mirroring_axes"),
        )
        self.reader = plans_manager.image_reader_writer_class()
        self.sources = [os.path.abspath(p) for p in [*files.values(), *checkpoints]]
        self.settings = {
            "configuration": configuration,
            "trainer": first["trainer_name"],
            "folds": [str(f) for f in folds],
            "use_mirroring": use_mirroring,
            "tile_step_size": tile_step_size,
        }

    @staticmethod
    def _check_labels(where: str, dataset: dict, num_classes: int | None) -> None:
        labels = dataset.get("labels", {})
        if "regions_class_order" in dataset or any(isinstance(v, (list, tuple)) for v in labels.values()):
            raise ValueError(
                f"{where}: a region-based model (sigmoid outputs over overlapping regions {labels}) has no class "
                "probabilities to distil; train the nnU-Net with one label per class."
            )
        classes = sorted(v for k, v in labels.items() if k != "ignore")
        if classes != list(range(len(classes))):
            raise ValueError(f"{where}: its labels {labels} are not consecutive from 0.")
        if num_classes is not None and len(classes) != num_classes:
            raise ValueError(
                f"{where}: its dataset has {len(classes)} classes {labels}, the student expects {num_classes}."
            )

    def fingerprint(self) -> dict:
        return {"kind": type(self).__name__, **self.settings, "sources": {s: sha256(s) for s in self.sources}}

    @torch.no_grad()
    def probabilities(self, image_path: str, spatial_shape: Sequence[int]) -> torch.Tensor:
        """Class probabilities (C, *spatial_shape) of ``image_path`` on its own voxel grid."""
        image, properties = self.reader.read_images([image_path])
        _, probabilities = self.predictor.predict_single_npy_array(image, properties, None, None, True)
        # nnU-Net's readers give (C, z, y, x) (SimpleITK's order); the file's voxel order is (x, y, z)
        probabilities = torch.as_tensor(np.ascontiguousarray(probabilities.transpose(0, 3, 2, 1))).float()
        if tuple(probabilities.shape[1:]) != tuple(spatial_shape):
            raise ValueError(
                f"teacher {self.name!r}: nnU-Net's output on {image_path} has shape {tuple(probabilities.shape[1:])}, "
                f"the image has {tuple(spatial_shape)}."
            )
        return probabilities
