"""The feedback-loop simulation: a fleet through the real agent, broker and cloud, with owners.

``fleet`` (individuals, quirks, ground truth), ``devices`` (agents in worker processes),
``owners`` (simulated answers), ``pipeline`` (retraining, release checks, rollouts), ``loop``
(the lock-step coordinator and phases) and ``report`` (metrics against the ground truth, the
table and the plot). Entry point: ``scripts/sim_feedback_loop``.
"""
