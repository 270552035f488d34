"""Learners: plain ``nn.Module``s reading hard ids ``(B, L)`` or soft tokens ``(B, L, V)``; all support double
backward (plain-math attention, no cuDNN RNN under soft input) so the inner optimisers can reverse them."""

from .bank import BankLearner
from .base import Learner, build_learner
from .rnn import RNNLM
from .sasrec import SASRec
from .transformer import TransformerLM

__all__ = ["BankLearner", "Learner", "RNNLM", "SASRec", "TransformerLM", "build_learner"]
