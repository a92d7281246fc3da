"""Tuning: a CreateHyperParameterTuningJob request on Ray Tune.

request.py validates it; job.py runs it (searchers, schedulers, resume); rules.py holds
how trials end (SageMaker's median rule, completion criteria, the wind-down); warm.py warm
starts from parent tuning jobs; record.py writes what SageMaker's describe calls return.
"""
from raysight.tune.job import run
from raysight.tune.request import parse_tuning_job, search_space

__all__ = ["parse_tuning_job", "run", "search_space"]
