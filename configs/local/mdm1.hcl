# MDM 1 of the one-host development quorum (ports of DESIGN.md section 12).
node_id     = "mdm-1"
data_dir    = "./data/mdm1"
api_addr    = "127.0.0.1:8001"
raft_addr   = "127.0.0.1:8101"
# Development token: clients send "Authorization: Bearer pflex-dev-token" (PFLEX_TOKEN).
admin_token = "pflex-dev-token"
log_level   = "info"

peer "mdm-1" {
  raft_addr = "127.0.0.1:8101"
  api_addr  = "127.0.0.1:8001"
}
peer "mdm-2" {
  raft_addr = "127.0.0.1:8102"
  api_addr  = "127.0.0.1:8002"
}
peer "mdm-3" {
  raft_addr = "127.0.0.1:8103"
  api_addr  = "127.0.0.1:8003"
}

raft {
  heartbeat_timeout    = "500ms"
  election_timeout     = "500ms"
  leader_lease_timeout = "250ms"
  commit_timeout       = "5ms"
}
