"""Ray Serve mode: the same FastAPI app and gateway pipeline in each Ray Serve replica.

A thin ingress deployment takes the HTTP request, reads which model it names and the
prefix of its prompt, and hands the raw request to that model's deployment through a
DeploymentHandle; Ray Serve's request router (ours: prefix affinity over power of two
choices) picks the replica, which runs the request through its own copy of the app.
Nothing here re-implements an endpoint.
"""
