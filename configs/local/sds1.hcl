# SDS 1 of the one-host development cluster (ports of DESIGN.md section 12).
id          = "sds-1"
data_dir    = "./data/sds1"
api_addr    = "127.0.0.1:9101"  # control HTTP
mgmt_addr   = "127.0.0.1:9201"
data_addr   = "127.0.0.1:9701"  # binary data protocol (SDCs and SDS peers)
# Development key: the MDMs accept it for registration and heartbeats.
cluster_key = "pflex-dev-cluster-key"
log_level   = "info"
heartbeat_interval = "500ms"
# All seven processes share this host's CPUs: one Go thread each costs less CPU per IO.
gomaxprocs = 1
# SDCs on this host pass write payloads in shared memory (the default; false: over the socket).
shared_memory = true
# SDCs on this host that share memory may read chunks from this SDS's devices under a read
# grant (the default; false: every read is served over the socket).
local_reads = true
# How long a primary waits for its secondary to take a forwarded write before it answers its
# client Retry (the default; at most 30s).
replica_timeout = "5s"
# Asked for the leader only while gossip has not named one.
mdm = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]

# Must exist on the MDMs: pflex pd create pd1
protection_domain = "pd1"
devices           = ["./data/sds1/dev0.img"]
total_capacity_gb = 100

gossip {
  bind_addr = "127.0.0.1:7911"
  join      = ["127.0.0.1:7901", "127.0.0.1:7902", "127.0.0.1:7903"]
  # The shared development gossip key (base64 of 32 bytes); generate your own with
  # head -c 32 /dev/urandom | base64
  key       = "ZvG5M1yAbxn/f9ZTQa6wVQ1qlvSCnjPMZKW2qCS81tg="
}
