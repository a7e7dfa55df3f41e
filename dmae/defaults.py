"""Default settings of DeepDMAE and `dmae cluster`.

They live apart from dmae.models, which imports TensorFlow, so that the
command line can print them in --help without importing it.
"""

# Chosen from single runs on digits with seed 0 (benchmarks/RESULTS.md).
# With λ_c = 1 or α = 10 the joint stage pulled the codes together and
# lowered ACC below that of k-means on the pretrained codes; λ_c = 0.1 with
# α = 100 raised it. Shifts and rotations during pretraining (on by default
# for image data) added about 0.02 ACC at the center initialization, and
# 300 instead of 150 pretraining epochs raised the median ACC over seeds
# 0, 1, 2 from 0.78 to 0.81.
# Pretraining uses Adam. The DMAE paper's replication scripts use SGD
# (lr 1, momentum 0.9), which was not measured on digits.
# Without the graph stage (graph_weight 0) the median ACC over seeds 0, 1, 2
# stays near 0.82, because for seeds 0 and 2 the pretrained codes split the
# 1s and merge the 3s with the 9s. The graph stage fixes both: on the same
# pretrained weights, with graph_weight 0.1 or 1 and 30 or 50 neighbors,
# the median ACC was 0.89 to 0.91. Curved 2-D sets such as moons need
# fewer neighbors: 10 separated the moons, 30 gave ACC 0.74 for one seed.
DEFAULTS = {
    "alpha": 100.0,
    "latent_dim": 10,
    "hidden_units": (500, 500, 2000),
    "architecture": "dense",
    "noise_std": 0.0,
    "lambda_c": 0.1,
    "lambda_r": 1.0,
    "pretrain_epochs": 300,
    "epochs": 60,
    "batch_size": 256,
    "pretrain_learning_rate": 1e-3,
    "learning_rate": 1e-4,
    "graph_weight": 1.0,
    "neighbors": 50,
    "graph_epochs": 50,
}
