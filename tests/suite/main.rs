mod kernels_offline;
