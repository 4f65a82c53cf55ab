package cli

// verbs is every leaf command, in the order usage lists them.
var verbs = allVerbs()

func allVerbs() []verb {
	var vs []verb
	vs = append(vs, statusVerb())
	vs = append(vs, topologyVerbs()...)
	vs = append(vs, volumeVerbs()...)
	vs = append(vs, ioVerbs()...)
	vs = append(vs, rebuildVerbs()...)
	vs = append(vs, clusterVerbs()...)
	return vs
}
