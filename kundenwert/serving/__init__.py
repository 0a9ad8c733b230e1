"""The FastAPI service: next-best actions, batch scoring, target lists, feedback."""
