"""Delayed labels: joining them to the scores that were served (``join``) and the prediction
store the worker writes for that join (``store``)."""
