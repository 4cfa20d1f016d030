"""A Flower App for hefl's benchmark: synchronous FedAvg on hefl's data and local training."""
