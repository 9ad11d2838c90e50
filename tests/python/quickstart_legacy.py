# The 2020 "User Access Tokens" Python quickstart (issue-tokens.py), assembled verbatim from the
# code blocks of tests/fixtures/seed-quickstart.md: the program skeleton, with every later block
# placed inside its `try:` at the skeleton's 3-space indent, in the document's order. Nothing else
# is changed; the conformance suite runs it unchanged against the emulator with
# azure-communication-administration==1.0.0b4.
import os
from azure.communication.administration import CommunicationIdentityClient

try:
   print('Azure Communication Services - User Access Tokens Quickstart')
   # Quickstart code goes here

   # This code demonstrates how to fetch your connection string
   # from an environment variable.
   connection_string = os.environ['COMMUNICATION_SERVICES_CONNECTION_STRING']

   # Instantiate the identity client
   client = CommunicationIdentityClient.from_connection_string(connection_string)

   user = client.create_user()
   print("\nCreated a user with ID: " + user.identifier + ":")

   # Issue an access token with the "voip" scope for a new user
   token_result = client.issue_token(user, ["voip"])
   expires_on = token_result.expires_on.strftime('%d/%m/%y %I:%M %S %p')
   print("\nIssued a token with 'voip' scope that expires at " + expires_on + ":")
   print(token_result.token)

   client.revoke_tokens(user)
   print("\nSuccessfully revoked all tokens for user with ID: " + user.identifier)

   client.delete_user(user)
   print("\nDeleted the user with ID: " + user.identifier)
except Exception as ex:
   print('Exception:')
   print(ex)
