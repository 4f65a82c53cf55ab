# The SDC of the compose cluster; NBD exports on 10809 (published on the host's loopback).
id          = "sdc-1"
data_dir    = "/data"
api_addr    = "0.0.0.0:8301"
mgmt_addr   = "sdc-1:8401"
nbd_addr    = "0.0.0.0:10809"
cluster_key = "pflex-dev-cluster-key"
log_level   = "info"
heartbeat_interval = "500ms"
# Every container has its own PID namespace: no SDS could map the SDC's shared memory.
shared_memory_mb = 0
mdm = ["mdm-1:8001", "mdm-2:8001", "mdm-3:8001"]

gossip {
  bind_addr = ":7921"
  join      = ["mdm-1:7901", "mdm-2:7901", "mdm-3:7901"]
  key       = "ZvG5M1yAbxn/f9ZTQa6wVQ1qlvSCnjPMZKW2qCS81tg="
}
