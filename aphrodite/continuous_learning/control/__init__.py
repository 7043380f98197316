"""Control: the learning state, the operator's actions, failure accounting and the background loop."""
