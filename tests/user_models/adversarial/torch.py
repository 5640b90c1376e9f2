"""A user's file called torch.py beside their model (shadows the real torch for the model's folder)."""
print("this is the user's torch.py")
