"""Live events: what the platform pushes to learners (cyberlab.events.services) and the
stream that carries them (cyberlab.events.stream)."""
