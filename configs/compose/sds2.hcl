# SDS 2 of the compose cluster: one sparse 4 GB file device in its volume.
id          = "sds-2"
data_dir    = "/data"
api_addr    = "sds-2:9101"
mgmt_addr   = "sds-2:9201"
data_addr   = "sds-2:9701"
cluster_key = "pflex-dev-cluster-key"
log_level   = "info"
heartbeat_interval = "500ms"
mdm = ["mdm-1:8001", "mdm-2:8001", "mdm-3:8001"]

# Created by the init service: pflex pd create pd1
protection_domain = "pd1"
devices           = ["/data/dev0.img"]
total_capacity_gb = 4

gossip {
  bind_addr = ":7911"
  join      = ["mdm-1:7901", "mdm-2:7901", "mdm-3:7901"]
  key       = "ZvG5M1yAbxn/f9ZTQa6wVQ1qlvSCnjPMZKW2qCS81tg="
}
