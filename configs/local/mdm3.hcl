# MDM 3 of the one-host development quorum (ports of DESIGN.md section 12).
node_id     = "mdm-3"
data_dir    = "./data/mdm3"
api_addr    = "127.0.0.1:8003"
raft_addr   = "127.0.0.1:8103"
log_level   = "info"

# Development secrets: admins send "Authorization: Bearer pflex-dev-token" (PFLEX_TOKEN);
# SDS/SDC/MGMT present the cluster key on register and heartbeat.
admin_token = "pflex-dev-token"
cluster_key = "pflex-dev-cluster-key"

# The three MDMs find each other over gossip and bootstrap one quorum once all three are up,
# whatever their start order.
bootstrap_expect = 3

gossip {
  bind_addr = "127.0.0.1:7903"
  join      = ["127.0.0.1:7901", "127.0.0.1:7902", "127.0.0.1:7903"]
  # The shared development gossip key (base64 of 32 bytes). A node with another key is refused.
  key       = "ZvG5M1yAbxn/f9ZTQa6wVQ1qlvSCnjPMZKW2qCS81tg="
}

# A component unreachable this long (gossip dead or heartbeats missed) is committed down.
sds_down_grace    = "1.5s"
heartbeat_timeout = "1.5s"

raft {
  heartbeat_timeout    = "500ms"
  election_timeout     = "500ms"
  leader_lease_timeout = "250ms"
  commit_timeout       = "5ms"
}
