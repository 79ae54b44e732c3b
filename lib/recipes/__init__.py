"""What a run of each kind builds and finishes: pretrain (MAE), finetune (regressor), transfer (encoder weights)."""
