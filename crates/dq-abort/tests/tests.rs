mod abort;
