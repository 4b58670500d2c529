"""Tensor-Train RNNs for long-term forecasting (Yu, Zheng, Anandkumar, Yue, arXiv:1711.00073):
cells, seq2seq forecaster and baselines, dynamics generators, ETTh1, training."""
