"""invariance.vision: invariance/equivariance methods for images.

* :mod:`~invariance.vision.galaxy`: rotation-invariant galaxy CNN (Dieleman et al. 2015):
  :class:`GalaxyNet`, :class:`GalaxyZooOutput`, procedural galaxies with simulated votes;
* :mod:`~invariance.vision.bss`: Batch Styles Standardization (Scalbert et al. 2024):
  :func:`batch_styles_standardization`, :class:`BSS`, a SimCLR pipeline on style domains;
* :mod:`~invariance.vision.sepc`: Scale-Equalizing Pyramid Convolution (Wang et al. 2020):
  :class:`PyramidConv`, :class:`SEPC`, a torchvision RetinaNet head;
* :mod:`~invariance.vision.render`: a differentiable ray caster for primitive scenes
  (:class:`Scene`, :func:`look_at`, :func:`render_scene`) and the Prim3D-10 objects, exact
  two-view geometry (:func:`cast`, :func:`project`, :func:`visible`) and triangle meshes
  (:func:`read_ply`, :func:`pyvista_mesh`, :func:`render_mesh`);
* :mod:`~invariance.vision.viat`: VIAT (Ruan et al. 2023): GMVFool (:func:`gmvfool`) and
  viewpoint-adversarial training;
* :mod:`~invariance.vision.modalities`: pixel-aligned infrared/depth/normal/event/sketch/paint
  images of renders;
* :mod:`~invariance.vision.prelude`: PreludeNet (Ziskind et al. 2022): the PredNet encoder
  (:class:`PredNet`), the depth decoder (:class:`PreludeNet`) and a U-Net baseline;
* :mod:`~invariance.vision.icl_select`: InvariantSelectPR (Zhou et al. 2024): :func:`cci_loss`,
  :class:`CCIHead`, :class:`InvariantSelectPR` / :class:`TopKNearestPR` / :class:`RandomPR`,
  :func:`vote_reader`, the frozen ImageNet MobileNetV2 (:func:`load_mobilenet_v2`);
* :mod:`~invariance.vision.cikd`: controllable multi-task network (Aich et al. 2023):
  :class:`SlimmableMTLNet`, :func:`cikd_loss`, :func:`search_widths`, :func:`count_macs`;
* :mod:`~invariance.vision.person_search`: SSL-style scale-invariant person search (Wang et al.
  2023, re-id on ground-truth boxes): :class:`PersonSearchNet`, :func:`scale_invariant_loss`,
  :class:`InstanceMemory`, :func:`multilabel_targets`, :func:`reid_map_cmc`;
* :mod:`~invariance.vision.invdiff`: InvDiff (Hou, Wu et al. 2025): :class:`DeltaGuidedUNet`,
  :func:`group_invariance_loss`, :func:`infer_groups`, :func:`bias_score` on diffusers UNets;
* :mod:`~invariance.vision.sie`: SIE (Garrido, Najman, LeCun 2023): :class:`SIE`,
  :class:`LinearHyperPredictor`, :func:`sie_loss`, the VICReg baseline;
* :mod:`~invariance.vision.lisgan`: LisGAN (Li et al. 2019): feature WGAN-GP with soul samples,
  :func:`soul_sample_loss`, :func:`soul_class_loss`, :func:`select_confident`;
* :mod:`~invariance.vision.minima`: MINIMA (Ren et al. 2025): LoFTR (:class:`MinimaMatcher`)
  trained on the rendered multimodal data engine (:func:`make_minima_pairs`), pose AUC
  (:func:`estimate_relative_pose`, :func:`pose_auc`) and matching precision.

Importing this package registers its methods (``galaxy``, ``galaxy_mean``, ``bss``, ``sepc``,
``viat``, ``preludenet``, ``invariant_select``, ``cikd``, ``person_search``, ``invdiff``,
``sie``, ``lisgan``, ``minima``) and the benches with :mod:`invariance.core.registry`.
"""

# `recipes` registers the methods, `bench` and `lisgan_bench` the benches (they import the
# method modules)
from invariance.vision import (
    bench,
    bss,
    cikd,
    galaxy,
    icl_select,
    invdiff,
    lisgan,
    lisgan_bench,
    minima,
    modalities,
    person_search,
    prelude,
    recipes,
    render,
    sepc,
    sie,
    viat,
)
from invariance.vision.bss import (
    BSS,
    SimCLR,
    SSLAugment,
    batch_styles_standardization,
    nt_xent_loss,
)
from invariance.vision.cikd import (
    SlimmableMTLNet,
    cikd_loss,
    controllability,
    count_macs,
    hypervolume,
    search_widths,
)
from invariance.vision.data.biased_digits import make_biased_digits
from invariance.vision.data.digit_scenes import make_digit_scenes
from invariance.vision.data.digit_styles import make_digit_styles
from invariance.vision.data.digits_mtl import make_digits_mtl
from invariance.vision.data.galaxies import make_galaxies, simulate_votes
from invariance.vision.data.lightbox import make_lightbox
from invariance.vision.data.minima_pairs import MODALITIES as MINIMA_MODALITIES
from invariance.vision.data.minima_pairs import grid_correspondences, make_minima_pairs
from invariance.vision.data.multidomain_digits import make_multidomain_digits
from invariance.vision.data.prim3d import PRIM3D_CLASSES, make_prim3d
from invariance.vision.data.rot_digits import make_rot_digits
from invariance.vision.data.synth_persons import make_synth_persons
from invariance.vision.data.zsl_features import make_synth_zsl
from invariance.vision.galaxy import GalaxyNet, GalaxyZooOutput, PlainGalaxyCNN
from invariance.vision.icl_select import (
    CCIHead,
    FrozenFeatures,
    InvariantSelectPR,
    RandomPR,
    TopKNearestPR,
    cci_loss,
    load_mobilenet_v2,
    precision_at_k,
    topk_select,
    vote_reader,
)
from invariance.vision.invdiff import (
    DeltaGuidedUNet,
    bias_score,
    group_invariance_loss,
    grouper_precision_recall,
    infer_groups,
)
from invariance.vision.lisgan import (
    FeatureCritic,
    FeatureGenerator,
    gradient_penalty,
    select_confident,
    soul_class_loss,
    soul_sample_loss,
    soul_samples,
)
from invariance.vision.minima import (
    MinimaMatcher,
    coarse_supervision,
    estimate_relative_pose,
    loftr_config,
    loftr_loss,
    pose_auc,
    relative_pose_error,
    symmetric_epipolar_distance,
)
from invariance.vision.nn.diffusion import (
    CrossAttnClassUNet,
    class_unet,
    cond_class_unet,
    ddim_sample,
    per_sample_losses,
)
from invariance.vision.nn.galaxy_layers import galaxy_views, merge_views
from invariance.vision.nn.slimmable import SlimConv2d, SwitchableBatchNorm2d
from invariance.vision.nn.vicreg import vicreg_loss
from invariance.vision.person_search import (
    InstanceMemory,
    PersonSearchNet,
    cluster_contrast_loss,
    cluster_pseudo_labels,
    jaccard_distance,
    multilabel_targets,
    reid_map_cmc,
    scale_invariant_loss,
    scale_pyramid,
    self_retrieval,
)
from invariance.vision.person_search_det import decode_detections, detection_loss, search_map_topk
from invariance.vision.prelude import DepthUNet, PredNet, PreludeNet, prediction_error_loss
from invariance.vision.recipes.bss import BSSConfig
from invariance.vision.recipes.cikd import CIKDConfig
from invariance.vision.recipes.galaxy import GalaxyConfig, GalaxyMeanConfig
from invariance.vision.recipes.icl_select import ICLSelectConfig
from invariance.vision.recipes.invdiff import InvDiffConfig
from invariance.vision.recipes.lisgan import LisGANConfig
from invariance.vision.recipes.minima import MinimaConfig
from invariance.vision.recipes.person_search import PersonSearchConfig
from invariance.vision.recipes.preludenet import PreludeNetConfig
from invariance.vision.recipes.sepc import SEPCConfig
from invariance.vision.recipes.sie import SIEConfig
from invariance.vision.recipes.viat import VIATConfig, ViewClassifier
from invariance.vision.render import (
    Camera,
    Mesh,
    Scene,
    cast,
    intrinsics,
    look_at,
    project,
    pyvista_mesh,
    read_ply,
    render_mesh,
    visible,
    world_to_camera,
)
from invariance.vision.render import render as render_scene
from invariance.vision.sepc import (
    SEPC,
    PyramidConv,
    SEPCRetinaHead,
    SmoothL1RegressionHead,
    build_retinanet,
    coco_detection_ap,
    detection_ap,
)
from invariance.vision.sie import SIE, LinearHyperPredictor, VICRegModel, sie_loss
from invariance.vision.viat import (
    GMMViews,
    gmvfool,
    nes_step,
    random_viewpoints,
    sample_pool_views,
    viat_loss,
    viewpoint,
)

__version__ = "0.1.0"

__all__ = [
    "GalaxyNet",
    "GalaxyZooOutput",
    "PlainGalaxyCNN",
    "galaxy_views",
    "merge_views",
    "make_galaxies",
    "simulate_votes",
    "batch_styles_standardization",
    "BSS",
    "SimCLR",
    "SSLAugment",
    "nt_xent_loss",
    "make_digit_styles",
    "PyramidConv",
    "SEPC",
    "SEPCRetinaHead",
    "SmoothL1RegressionHead",
    "build_retinanet",
    "detection_ap",
    "coco_detection_ap",
    "GalaxyConfig",
    "GalaxyMeanConfig",
    "BSSConfig",
    "SEPCConfig",
    "recipes",
    "make_digit_scenes",
    "bench",
    "lisgan_bench",
    "bss",
    "galaxy",
    "sepc",
    "render",
    "viat",
    "Scene",
    "Camera",
    "look_at",
    "render_scene",
    "make_prim3d",
    "PRIM3D_CLASSES",
    "GMMViews",
    "gmvfool",
    "nes_step",
    "viewpoint",
    "random_viewpoints",
    "sample_pool_views",
    "viat_loss",
    "VIATConfig",
    "ViewClassifier",
    "modalities",
    "prelude",
    "PredNet",
    "PreludeNet",
    "DepthUNet",
    "prediction_error_loss",
    "PreludeNetConfig",
    "make_lightbox",
    "CCIHead",
    "FrozenFeatures",
    "InvariantSelectPR",
    "RandomPR",
    "TopKNearestPR",
    "cci_loss",
    "load_mobilenet_v2",
    "precision_at_k",
    "topk_select",
    "vote_reader",
    "make_multidomain_digits",
    "ICLSelectConfig",
    "icl_select",
    "SlimmableMTLNet",
    "SlimConv2d",
    "SwitchableBatchNorm2d",
    "cikd_loss",
    "controllability",
    "count_macs",
    "hypervolume",
    "search_widths",
    "make_digits_mtl",
    "CIKDConfig",
    "cikd",
    "PersonSearchNet",
    "InstanceMemory",
    "multilabel_targets",
    "reid_map_cmc",
    "scale_invariant_loss",
    "scale_pyramid",
    "make_synth_persons",
    "PersonSearchConfig",
    "person_search",
    "DeltaGuidedUNet",
    "group_invariance_loss",
    "infer_groups",
    "grouper_precision_recall",
    "bias_score",
    "class_unet",
    "cond_class_unet",
    "CrossAttnClassUNet",
    "ddim_sample",
    "per_sample_losses",
    "make_biased_digits",
    "InvDiffConfig",
    "invdiff",
    "SIE",
    "VICRegModel",
    "LinearHyperPredictor",
    "sie_loss",
    "vicreg_loss",
    "make_rot_digits",
    "SIEConfig",
    "sie",
    "FeatureGenerator",
    "FeatureCritic",
    "gradient_penalty",
    "soul_samples",
    "soul_sample_loss",
    "soul_class_loss",
    "select_confident",
    "make_synth_zsl",
    "LisGANConfig",
    "lisgan",
    "minima",
    "MINIMA_MODALITIES",
    "grid_correspondences",
    "make_minima_pairs",
    "MinimaMatcher",
    "coarse_supervision",
    "estimate_relative_pose",
    "loftr_config",
    "loftr_loss",
    "pose_auc",
    "relative_pose_error",
    "symmetric_epipolar_distance",
    "MinimaConfig",
    "Mesh",
    "cast",
    "intrinsics",
    "project",
    "read_ply",
    "render_mesh",
    "pyvista_mesh",
    "visible",
    "world_to_camera",
    "cluster_contrast_loss",
    "cluster_pseudo_labels",
    "jaccard_distance",
    "self_retrieval",
    "decode_detections",
    "detection_loss",
    "search_map_topk",
]
