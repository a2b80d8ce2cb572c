"""Events: rules over smoothed labels, pre-roll clips, snapshots, the event log and its outputs."""
