"""Parameter files, RViz configuration and robot description of the visuomotor loop."""
