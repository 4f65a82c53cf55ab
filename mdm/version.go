package mdm

// Version is the pflex version reported by every MDM.
var Version = "0.1.0-dev"
