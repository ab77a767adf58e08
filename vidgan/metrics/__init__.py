"""Video GAN scores: the UCF101 C3D classifier (tgan2 §5.7, docs/FIDELITY.md) behind the
Inception Score, FID on fc7 features and DDM on logits; the Kinetics-400 I3D behind FVD and
KVD; the analytic readers of vidgan's generated datasets. Each metric is a record in
``vidgan.metrics.registry``; ``vidgan.metrics.evaluation`` runs the protocols."""
from vidgan.metrics.c3d import C3D, load_c3d, save_c3d
from vidgan.metrics.ddm import ddm
from vidgan.metrics.fid import frechet_distance, frechet_distance_to_features
from vidgan.metrics.fvd import fvd, kvd
from vidgan.metrics.i3d import I3D, load_i3d, save_i3d
from vidgan.metrics.inception_score import inception_score
from vidgan.metrics.stats import mean_cov

__all__ = ["C3D", "load_c3d", "save_c3d", "I3D", "load_i3d", "save_i3d", "inception_score",
           "frechet_distance", "frechet_distance_to_features", "ddm", "fvd", "kvd", "mean_cov"]
