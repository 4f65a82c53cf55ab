# SDC 1 of the one-host development cluster (ports of DESIGN.md section 12).
id          = "sdc-1"
data_dir    = "./data/sdc1"
api_addr    = "127.0.0.1:8301"  # control HTTP
mgmt_addr   = "127.0.0.1:8401"
nbd_addr    = "127.0.0.1:10809" # NBD exports: one per volume mapped to this SDC
# The same exports for clients on this host, without TCP: nbd+unix:///vol1?socket=data/sdc1/nbd.sock
nbd_socket  = "./data/sdc1/nbd.sock"
# Development key: the MDMs accept it for registration and heartbeats.
cluster_key = "pflex-dev-cluster-key"
log_level   = "info"
heartbeat_interval = "500ms"
# All seven processes share this host's CPUs: one Go thread each costs less CPU per IO.
gomaxprocs = 1
# Write payloads in 32 MiB of memory the SDSs on this host map (the default; 0: off).
shared_memory_mb = 32
# Read chunks whose primary SDS is on this host from its device, under its grant (the default).
local_reads = true
# Asked for the leader only while gossip has not named one.
mdm = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]

gossip {
  bind_addr = "127.0.0.1:7921"
  join      = ["127.0.0.1:7901", "127.0.0.1:7902", "127.0.0.1:7903"]
  # The shared development gossip key (base64 of 32 bytes); generate your own with
  # head -c 32 /dev/urandom | base64
  key       = "ZvG5M1yAbxn/f9ZTQa6wVQ1qlvSCnjPMZKW2qCS81tg="
}
