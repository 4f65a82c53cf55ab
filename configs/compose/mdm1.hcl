# MDM 1 of the compose cluster: hostname mdm-1 on the private network pflex.
node_id   = "mdm-1"
data_dir  = "/data"
api_addr  = "0.0.0.0:8001"
api_advertise = "mdm-1:8001"
raft_addr = "mdm-1:8101"
log_level = "info"

# Development secrets (as configs/local): change them for anything but a test bench.
admin_token = "pflex-dev-token"
cluster_key = "pflex-dev-cluster-key"

# The three MDMs find each other over gossip by service name and bootstrap once all are up.
bootstrap_expect = 3

gossip {
  bind_addr = ":7901"
  join      = ["mdm-1:7901", "mdm-2:7901", "mdm-3:7901"]
  key       = "ZvG5M1yAbxn/f9ZTQa6wVQ1qlvSCnjPMZKW2qCS81tg="
}

sds_down_grace    = "5s"
heartbeat_timeout = "2s"
